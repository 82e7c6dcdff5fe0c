"""Models served by another process: an OpenAI-compatible inference engine such as vLLM.

- `client`: HTTP to the engine (connection, event stream, JSON), its settings and errors;
- `discovery`: which engines there are and which models each serves now;
- `backend`: one model on an engine, streaming, chatting and scoring as a local model does.

A catalog file (`--catalog FILE`) may also name one model of an engine:
`{"name": "big", "engine": "http://host:8000/v1", "model": "meta-llama/Llama-3.1-70B", "description": "..."}`.
"""
