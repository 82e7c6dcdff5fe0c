"""The bottom layer: what every other layer speaks, with no torch and no model in it.

- `events`: what a run reports (TokenInfo, TextEvent, Summary, the stop reasons, the clock, Score, Live);
- `settings`: the generation controls, the operator's limits and the request errors;
- `backend`: the one protocol every model source meets (stream, chat, score, capabilities);
- `chat`: chat templates and the conversation's fit, shared by local and engine models.

Nothing here imports from another textgen layer.
"""
