"""The installed package: type stubs and py.typed ship with it, and the stubs name exactly
what the module has."""

import ast
import pathlib
import types

import frameshare


def test_stubs_ship_and_match_the_module():
    package = pathlib.Path(frameshare.__file__).parent
    assert (package / "py.typed").exists()
    stub = ast.parse((package / "__init__.pyi").read_text())
    stubbed = {
        node.name: node
        for node in stub.body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef))
    }
    public = {n for n in dir(frameshare) if not n.startswith("_")
              and not isinstance(getattr(frameshare, n), types.ModuleType)}
    typing_only = {n for n, node in stubbed.items()
                   if isinstance(node, ast.ClassDef)
                   and any(getattr(b, "id", None) == "TypedDict" for b in node.bases)}
    assert public == set(stubbed) - typing_only, "stubs and module disagree"
    for name, node in stubbed.items():
        if name in typing_only or not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(frameshare, name)
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        missing = {m for m in methods if not hasattr(cls, m)}
        assert not missing, f"{name}: the stub names {missing}, the class lacks them"
        assert cls.__doc__, f"{name} has no docstring"
