from textgen.core.events import Summary
from textgen.core.settings import GenerationSettings
from textgen.local.generation import stream


def test_every_fixture_model_streams(manager, catalog):
    for name in catalog.names():
        events = list(stream(manager.get(name), GenerationSettings.parse("First", max_new_tokens=5, seed=1)))
        assert isinstance(events[-1], Summary)
        assert events[-1].tokens == [5] or events[-1].stop_reasons == ["end_of_text"]
