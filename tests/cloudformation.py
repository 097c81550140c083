"""CloudFormation templates for tests: read in their long form, linted by cfn-lint."""
from __future__ import annotations

from collections.abc import Iterator
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


def branches(value: Any) -> Iterator[Any]:
    """Every value ``value`` can become: both sides of each ``Fn::If``, without ``AWS::NoValue``."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for branch in value["Fn::If"][1:]:
            yield from branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def as_list(value: Any) -> list[Any]:
    """A policy field that is one item or a list of items, as a list."""
    return value if isinstance(value, list) else [value]


def policy_statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every statement a policy document can hold, whichever way its conditions (``Fn::If``) go."""
    for listed in as_list(document["Statement"]):
        yield from branches(listed)
