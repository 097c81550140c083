"""CloudFormation templates for tests: read in their long form, linted by cfn-lint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class CloudFormationLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short tags (``!Ref X`` -> ``{"Ref": "X"}``,
    ``!Sub s`` -> ``{"Fn::Sub": s}``, ``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ...)."""


def _short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    else:
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node {node!r}", node.start_mark)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path) -> dict[str, Any]:
    """A CloudFormation template in its long form (every short tag as its ``Fn::`` mapping)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=CloudFormationLoader)  # noqa: S506 - a safe loader


def lint_problems(template: Path) -> list[str]:
    """What cfn-lint finds wrong with ``template`` (nothing: an empty list)."""
    from cfnlint.api import lint_file  # a test tool, not a dependency of the package

    return [str(problem) for problem in lint_file(template)]
