from textgen.events import Summary
from textgen.generation import stream
from textgen.settings import GenerationSettings


def test_every_fixture_model_streams(manager, catalog):
    for name in catalog.names():
        events = list(stream(manager.get(name), GenerationSettings.parse("First", max_new_tokens=5, seed=1)))
        assert isinstance(events[-1], Summary)
        assert events[-1].tokens == [5] or events[-1].stop_reasons == ["end_of_text"]
