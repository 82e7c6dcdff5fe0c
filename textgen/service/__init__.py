"""What the page, the API and the CLI ask for: the catalog, loading, the playground, explain, start-up.

- `catalog`: which models can be used (the allowlist), engine models included;
- `loading`: the one place that picks the backend a catalog entry opens, and the memory budget;
- `playground`: request handling behind the page (Stop, pacing, slots, per-model failures);
- `explain`: the step-by-step views; `startup`: serving the page before torch is imported.

It talks to models only through `textgen.core.backend` (and, for the step view, the local loop).
"""
