"""Which layer ranges a model can honour: the session's check of a policy against the adapter's
`unprunable_layers` (docs/architecture.md, "Extension points")."""

from __future__ import annotations

from plphp.backends.adapters import ModelAdapter
from plphp.errors import ConfigError
from plphp.policy import Policy


def check_layer_range(policy: Policy, adapter: ModelAdapter) -> None:
    """Refuse a layer range the model cannot honour, with the adapter's reason (`unprunable_layers`).

    Raises:
        ConfigError: `start_layer` past the model's depth; a decode-stage range holding no prunable
            layer; a prefill-stage start before a layer that must see every token.
    """
    count = adapter.num_layers
    if policy.start_layer >= count:
        raise ConfigError(
            f"policy.start_layer: {policy.start_layer} is not a layer of this model, which has {count} decoder "
            f"layers; allowed are 0 to {count - 1}"
        )
    if policy.stage == "input":  # tokens leave before the first layer: no layer may need them all
        whole = adapter.unprunable_layers("input")
        if whole:
            first = min(whole)
            raise ConfigError(
                f"policy.stage: 'input' cannot hold on {type(adapter.model).__name__}: vision tokens leave "
                f"before the first decoder layer, but layer {first} {whole[first]}; use stage 'decode'"
            )
        return
    if policy.stage == "prefill":
        whole = adapter.unprunable_layers("prefill")
        inside = [idx for idx in sorted(whole) if idx >= policy.start_layer]
        if inside:
            first_allowed = max(max(whole) + 1, 1)
            allowed = (
                f"allowed are {first_allowed} to {count - 1}" if first_allowed < count - 1 else "use stage 'decode'"
            )
            if first_allowed == count - 1:
                allowed = f"the only start allowed is {first_allowed}"
            raise ConfigError(
                f"policy.start_layer: {policy.start_layer} cannot hold with stage 'prefill' on "
                f"{type(adapter.model).__name__}: tokens leave every layer from it on, but layer {inside[0]} "
                f"{whole[inside[0]]}; {allowed}"
            )
        return
    whole = adapter.unprunable_layers("decode")
    end = min(policy.end_layer or count, count)
    if all(idx in whole for idx in range(policy.start_layer, end)):
        raise ConfigError(
            f"policy.start_layer: layers {policy.start_layer} to {end - 1} of this model cannot be pruned "
            f"(layer {policy.start_layer} {whole[policy.start_layer]}), so nothing would be pruned; "
            "choose another layer range or model"
        )
