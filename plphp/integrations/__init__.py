"""plphp inside other harnesses. `lmms_eval`: the lmms-eval model `plphp` (docs/tutorials/lmms-eval.md).

Nothing in plphp imports these modules; lmms-eval finds the model through the entry point group
`lmms_eval.models`, which names `lmms_eval_manifest`.
"""

from __future__ import annotations

from typing import Any

#: The model's name on lmms-eval's command line (`--model plphp`).
LMMS_MODEL_ID = "plphp"


def lmms_eval_manifest() -> Any:
    """lmms-eval's registration of the model: a chat implementation (`generate_until` on
    `doc_to_messages`) and a simple one (`--force_simple`: context strings and `doc_to_visual`,
    also what multiple-choice `loglikelihood` tasks use)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(
        model_id=LMMS_MODEL_ID,
        chat_class_path="plphp.integrations.lmms_eval.PlphpChat",
        simple_class_path="plphp.integrations.lmms_eval.PlphpSimple",
    )
