from plphp.cli import main

main()
