"""A visitor's session, as Gradio keeps it: the page's component configurations, made once and copied per session
(ui/sessions.py), read the same as Gradio's own and never shared between two visitors."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio.state_holder import SessionState

import app
from textgen.service.loading import ModelManager
from textgen.service.playground import Playground
from ui.sessions import lazy_session_configs


@pytest.fixture(scope="module")
def page(catalog):
    assert lazy_session_configs()  # the Gradio this was measured on
    return app.build_demo(Playground(ModelManager(catalog, device="cpu")))


def gradios_own(session: SessionState, key: int, value) -> dict:
    """The configuration Gradio itself writes for a component, with `value` as its streaming update sets it."""
    config = session.blocks_config.config_for_block(key, [], session.blocks_config.blocks[key])
    if "props" in config:
        config["props"]["value"] = value
    return config


def test_every_component_reads_as_gradios_own_configuration(page):
    first, second = SessionState(page), SessionState(page)
    for key in page.blocks:
        first._update_value_in_config(key, "first visitor's text")
        second._update_value_in_config(key, "second visitor's text")
    for key in page.blocks:
        assert first.config_values[key] == gradios_own(first, key, "first visitor's text")
        assert second.config_values[key] == gradios_own(second, key, "second visitor's text")


def test_a_component_a_session_replaced_gets_its_own_configuration(page):
    key = next(k for k, b in page.blocks.items() if isinstance(b, gr.Textbox))
    changed, other = SessionState(page), SessionState(page)
    changed[key] = gr.Textbox(label="relabelled for one visitor", render=False)  # as an update with new properties
    changed._update_config(key)
    changed._update_value_in_config(key, "a")
    other._update_value_in_config(key, "b")
    assert changed.config_values[key]["props"]["label"] == "relabelled for one visitor"
    assert other.config_values[key]["props"]["label"] != "relabelled for one visitor"
    assert other.config_values[key] == gradios_own(other, key, "b")
