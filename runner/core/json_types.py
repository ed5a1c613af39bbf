"""What a JSON document holds, as types: :data:`Json` for any value, :data:`JsonObject` for an object.

For data the runner records or passes on without reading into it (a config, metrics, the facts a
training process reports); what it does read has a typed model of its own. Standard library only.
"""

from __future__ import annotations

from typing import TypeAlias

Json: TypeAlias = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject: TypeAlias = dict[str, Json]
