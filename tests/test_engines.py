"""The engine registry: every name a recipe or flag may give is an engine."""

import re

import pytest

from tvmharness.engines import ENGINE_NAMES, get_engine
from tvmharness.errors import HarnessError


def test_every_engine_name_is_an_engine_and_an_unknown_one_is_told_them_all():
    assert [get_engine(name).name for name in ENGINE_NAMES] == list(ENGINE_NAMES)
    with pytest.raises(HarnessError, match=re.escape(f"known engines: {', '.join(ENGINE_NAMES)}")):
        get_engine("tvmx")
