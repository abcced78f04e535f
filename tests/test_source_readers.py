"""Every source's reader module follows the one reader protocol (transforms.sources.SourceReader)."""

import inspect

import pytest

from schemas.records import ALL_SOURCES
from transforms.sources import SourceReader, reader


@pytest.mark.parametrize("name", ALL_SOURCES)
def test_every_reader_module_is_a_source_reader(name):
    module = reader(name)
    assert isinstance(module, SourceReader)
    assert name == module.NAME
    for method in ("plan", "read"):
        wanted = inspect.signature(getattr(SourceReader, method))
        wanted = wanted.replace(parameters=list(wanted.parameters.values())[1:])  # without self
        found = inspect.signature(getattr(module, method))
        assert [(p.name, p.default) for p in found.parameters.values()] == [
            (p.name, p.default) for p in wanted.parameters.values()
        ], f"{name}.{method}{found}"


def test_an_unknown_source_names_the_known_ones():
    with pytest.raises(KeyError, match="expected one of"):
        reader("mimc")
