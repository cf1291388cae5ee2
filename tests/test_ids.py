"""Derived ids are exactly RFC 4122 version-5 UUIDs."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from jimeng_batch.protocol.ids import uuid5_text, uuid5_texts


@given(st.uuids(), st.text())
def test_uuid5_text_equals_the_standard_library(namespace: uuid.UUID, name: str) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


@given(st.uuids(), st.text(), st.lists(st.text(), max_size=4))
def test_uuid5_texts_equals_the_standard_library(namespace: uuid.UUID, prefix: str, names: list[str]) -> None:
    assert uuid5_texts(namespace, prefix, names) == [str(uuid.uuid5(namespace, prefix + name)) for name in names]
