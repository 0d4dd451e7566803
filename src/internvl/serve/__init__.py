"""`internvl serve`: an OpenAI-compatible chat-completions server with continuous batching.

    slots.py     SlotCache: a KV cache whose rows hold sequences of different lengths
    engine.py    Engine: the scheduler thread; requests join and leave the decode batch at every step
    protocol.py  the OpenAI wire format (requests, responses, stream chunks, errors)
    media.py     data:, file:// and http(s) media under the server's rules
    prepare.py   request -> processed prompt and generation settings; every refusal happens here
    app.py       the FastAPI routes
    page.py      the chat page at / (static files in static/)
    server.py    uvicorn: run_server (the command) and BackgroundServer (tests, benchmarks)
    settings.py  ServeSettings: network, API key, media sources, caps

Needs the [serve] extra (fastapi, uvicorn); nothing here is imported by the rest of the package.
"""
