"""A stand-in for a vLLM worker that answers at once (one token), so that
benchmarks/gateway_overhead.py measures the gateway's own cost without engine noise.

    python benchmarks/instant_worker.py PORT
"""

import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

app = FastAPI()


@app.get("/health")
async def health():
    return {}


@app.post("/v1/load_lora_adapter")
async def load(r: Request):
    return "ok"


@app.post("/v1/unload_lora_adapter")
async def unload(r: Request):
    return "ok"


@app.post("/v1/completions")
async def complete(r: Request):
    body = await r.json()
    m = body["model"]
    if body.get("stream"):
        async def gen():
            yield f'data: {{"id":"x","object":"text_completion","created":1,"model":"{m}","choices":[{{"index":0,"text":"hi","logprobs":null,"finish_reason":null}}]}}\n\n'
            yield f'data: {{"id":"x","object":"text_completion","created":1,"model":"{m}","choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}\n\n'
            yield "data: [DONE]\n\n"
        return StreamingResponse(gen(), media_type="text/event-stream")
    return JSONResponse({"id": "x", "object": "text_completion", "model": m, "choices": [{"index": 0, "text": "hi"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 1}})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
