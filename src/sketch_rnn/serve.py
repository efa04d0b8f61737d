"""``sketch-rnn serve``: a page where you draw and a trained model finishes the drawing, and its JSON API.

The app (Starlette, run by uvicorn) serves ``static/index.html`` at ``/`` and answers, in JSON:

- ``GET /api/info``: ``{"preset", "classes", "conditional", "max_seq_len", "scale", "extent"}``;
- ``POST /api/complete`` ``{"strokes": [[dx, dy, pen], ...], "temperature": 0.5, "seed": 1}``:
  ``{"strokes": [...]}``, the strokes sent followed by the model's continuation;
- ``POST /api/sample`` ``{"temperature", "seed"}``: ``{"strokes": [...]}``, a new sketch;
- ``POST /api/reconstruct`` ``{"strokes", "temperature", "seed"}`` (conditional models):
  ``{"strokes": [...]}``, the sketch encoded and decoded again;
- ``POST /api/interpolate`` ``{"first", "second", "steps": 5, "temperature", "seed"}`` (conditional
  models): ``{"sketches": [[...], ...]}``, ``steps`` sketches decoded between the two codes.

Strokes are stroke-3 in the data's own units (QuickDraw's pixels): the sampling functions divide
them by the run's ``scale`` before the model sees them and multiply what it draws by it.
``extent`` is the median size (the larger of width and height) of the run's training sketches, so
that a page can show a drawing at the size the model knows. ``temperature`` is in (0, 2]
(default 0.5), ``seed`` an integer in [0, 2**32) (default 0).

Bad input gets a 4xx answer ``{"error": "..."}`` naming the problem: a body over ``max_body``
bytes (413), not JSON, not an object, an unknown field, a missing one, a value of the wrong type
or out of range, strokes that are not ``[dx, dy, pen]`` rows, with non-finite offsets or offsets
over ``MAX_OFFSET`` times the scale, a pen other than 0 or 1, or more points than ``max_seq_len``
(400); reconstruct and interpolate on an unconditional model (400). Every model call runs on
one worker thread, one call at a time: concurrent requests wait their turn in its queue while the
event loop goes on serving.

>>> import dataclasses
>>> from sketch_rnn import presets
>>> from sketch_rnn.model import build_model
>>> from starlette.testclient import TestClient
>>> hps = presets.get("tiny")
>>> config = {"preset": "tiny", "hparams": dataclasses.asdict(hps), "classes": ["circle"], "scale": 10.0,
...           "data": {"source": "npz", "paths": []}}
>>> client = TestClient(create_app(build_model(hps), config))
>>> client.post("/api/complete", json={"strokes": [[5, 0, 0]], "temperature": 3}).json()
{'error': 'temperature must be a number in (0, 2], got 3'}
"""

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import keras
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sketch_rnn import runs, sampling

#: Requests with a larger body are refused (413).
MAX_BODY = 256 * 1024
#: Offsets larger than this many times the data's scale are refused as absurd.
MAX_OFFSET = 100
#: The most sketches one interpolation decodes.
MAX_STEPS = 16
#: The extent given when the run's training data cannot be read here: QuickDraw's canvas.
QUICKDRAW_EXTENT = 256.0
STATIC = resources.files("sketch_rnn") / "static"


class BadRequest(Exception):
    """A request the API refuses: its HTTP status and what is wrong.

    >>> BadRequest("seed must be an integer").status
    400
    """

    def __init__(self, problem: str, status: int = 400):
        super().__init__(problem)
        self.status = status


def typical_extent(config: dict) -> float:
    """The median of the larger of width and height of the run's first 2000 training sketches, in
    data units; ``QUICKDRAW_EXTENT`` when its data files cannot be read here.

    >>> typical_extent({"data": {"source": "npz", "paths": ["/nonexistent.npz"]}})
    256.0
    >>> 50 < typical_extent({"data": {"source": "synthetic", "per_class": 3, "seed": 0}}) < 150
    True
    """
    try:
        sketches = runs.load_data(config["data"]).train
    except (OSError, ValueError):
        return QUICKDRAW_EXTENT
    points = [np.cumsum(np.asarray(s[:, :2], dtype=np.float64), axis=0) for s in sketches[:2000]]
    return float(np.median([(p.max(axis=0) - p.min(axis=0)).max() for p in points]))


# --- checking requests ---------------------------------------------------------------------------


def _number(value, name, low, high, integer=False, low_open=False):
    """``value`` if it is a JSON number (an integer if ``integer``) in ``[low, high]`` (``(low, high]``)."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    # Comparisons, not math.isfinite: NaN and infinities fail them, and a huge int does not overflow.
    if not ok_type or isinstance(value, bool) or not (low < value <= high if low_open else low <= value <= high):
        bounds = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise BadRequest(f"{name} must be {kind} in {bounds}, got {json.dumps(value)[:40]}")
    return value


def _strokes(value, name, max_points, limit):
    """``value`` as float32 stroke-3 ``(k, 3)``, checked: 1 to ``max_points`` rows ``[dx, dy, pen]``,
    offsets finite and at most ``limit`` in size, pens 0 or 1."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{name} must be a non-empty list of [dx, dy, pen] points")
    if len(value) > max_points:
        raise BadRequest(f"{name} has {len(value)} points, more than the model's max_seq_len={max_points}")
    for i, row in enumerate(value):
        if not (isinstance(row, list) and len(row) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)):
            raise BadRequest(f"{name}[{i}] must be a point [dx, dy, pen] of three numbers, got {json.dumps(row)[:40]}")
        if not all(abs(v) <= limit for v in row[:2]):  # False for NaN and infinities
            raise BadRequest(f"{name}[{i}] has an offset that is not finite or over {limit:.4g} "
                             f"({MAX_OFFSET} times the data's scale): {json.dumps(row)[:60]}")
        if row[2] not in (0, 1):
            raise BadRequest(f"{name}[{i}] has pen {json.dumps(row[2])}: 0 (down) or 1 (lifted after the point)")
    return np.array(value, dtype=np.float32)


async def _json_body(request, fields, max_body):
    """The request's JSON object, checked: at most ``max_body`` bytes, only keys of ``fields``,
    every key whose default is ``...`` present; missing keys take their default."""
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > max_body:
        raise BadRequest(f"the body is over the limit of {max_body} bytes (Content-Length: {length[:20]})", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise BadRequest(f"the body is over the limit of {max_body} bytes", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"the body is not JSON ({type(error).__name__}: {str(error)[:80]})") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object with the fields {', '.join(fields)}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(fields)}")
    missing = [key for key, default in fields.items() if default is ... and key not in body]
    if missing:
        raise BadRequest(f"the field {missing[0]!r} is missing")
    return {**fields, **body}


def _rows(strokes):
    return [[round(float(dx), 2), round(float(dy), 2), int(pen)] for dx, dy, pen in strokes]


# --- the app -------------------------------------------------------------------------------------


class Worker:
    """Runs the model's calls on one thread, in the order they come: never two at once.

    >>> import asyncio
    >>> asyncio.run(Worker().run(sum, [1, 2]))
    3
    """

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sketch-rnn-model")

    async def run(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the worker thread, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))


def create_app(model: keras.Model, config: dict, max_body: int = MAX_BODY) -> Starlette:
    """The Starlette app serving ``model``, trained on the data of ``config`` (a run's ``config.json``).

    >>> import dataclasses
    >>> from sketch_rnn import presets
    >>> from sketch_rnn.model import build_model
    >>> from starlette.testclient import TestClient
    >>> hps = dataclasses.replace(presets.get("tiny"), conditional=False)
    >>> config = {"preset": "tiny", "hparams": dataclasses.asdict(hps), "classes": ["circle"], "scale": 10.0,
    ...           "data": {"source": "npz", "paths": []}}
    >>> client = TestClient(create_app(build_model(hps), config))
    >>> client.get("/api/info").json()["max_seq_len"], client.post("/api/reconstruct", json={"strokes": []}).json()
    (12, {'error': 'reconstruct needs a conditional model (with an encoder); this one is unconditional'})
    """
    scale, max_len, conditional = float(config["scale"]), config["hparams"]["max_seq_len"], config["hparams"]["conditional"]
    limit = MAX_OFFSET * scale
    worker = Worker()
    info = {"preset": config["preset"], "classes": config["classes"], "conditional": conditional,
            "max_seq_len": max_len, "scale": scale, "extent": typical_extent(config)}
    drawing = {"temperature": 0.5, "seed": 0}

    def drawing_args(body):
        return {"temperature": _number(body["temperature"], "temperature", 0, 2, low_open=True),
                "seed": _number(body["seed"], "seed", 0, 2**32 - 1, integer=True), "scale": scale}

    def needs_encoder(what):
        if not conditional:
            raise BadRequest(f"{what} needs a conditional model (with an encoder); this one is unconditional")

    async def api_info(request):
        return JSONResponse(info)

    async def api_complete(request):
        body = await _json_body(request, {"strokes": ..., **drawing}, max_body)
        prefix = _strokes(body["strokes"], "strokes", max_len, limit)
        [done] = await worker.run(sampling.complete, model, [prefix], **drawing_args(body))
        return JSONResponse({"strokes": body["strokes"] + _rows(done[len(prefix):])})

    async def api_sample(request):
        body = await _json_body(request, drawing, max_body)
        [sketch] = await worker.run(sampling.sample, model, 1, **drawing_args(body))
        return JSONResponse({"strokes": _rows(sketch)})

    async def api_reconstruct(request):
        body = await _json_body(request, {"strokes": ..., **drawing}, max_body)
        needs_encoder("reconstruct")
        sketch = _strokes(body["strokes"], "strokes", max_len, limit)
        [rebuilt] = await worker.run(sampling.reconstruct, model, [sketch], **drawing_args(body))
        return JSONResponse({"strokes": _rows(rebuilt)})

    async def api_interpolate(request):
        body = await _json_body(request, {"first": ..., "second": ..., "steps": 5, **drawing}, max_body)
        needs_encoder("interpolate")
        pair = [_strokes(body[key], key, max_len, limit) for key in ("first", "second")]
        steps = _number(body["steps"], "steps", 2, MAX_STEPS, integer=True)
        _, sketches = await worker.run(sampling.interpolate, model, *pair, steps=steps, **drawing_args(body))
        return JSONResponse({"sketches": [_rows(s) for s in sketches]})

    async def page(request):
        return FileResponse(STATIC / "index.html")

    async def refused(request, error):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    async def http_error(request, error):
        return JSONResponse({"error": error.detail}, status_code=error.status_code)

    routes = [
        Route("/", page),
        Route("/api/info", api_info),
        Route("/api/complete", api_complete, methods=["POST"]),
        Route("/api/sample", api_sample, methods=["POST"]),
        Route("/api/reconstruct", api_reconstruct, methods=["POST"]),
        Route("/api/interpolate", api_interpolate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(routes=routes, exception_handlers={BadRequest: refused, HTTPException: http_error})


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` (port 0: a free one), or an ``OSError`` saying where.

    >>> sock = listen("127.0.0.1", 0)
    >>> sock.getsockname()[1] > 0
    True
    >>> sock.close()
    """
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def serve(model: keras.Model, config: dict, host: str = "127.0.0.1", port: int = 8000, name: str = "") -> None:
    """Serve ``model`` (trained on the data of ``config``) on ``http://host:port/`` until Ctrl-C, the
    URL printed first; ``name`` (the run folder) is printed with it. Ctrl-C stops it gracefully
    and raises ``KeyboardInterrupt`` again (``sketch-rnn`` exits with status 130). What
    ``sketch-rnn serve`` runs::

        serve(runs.load_model("runs/demo"), runs.read_config("runs/demo"), port=8000, name="runs/demo")
    """
    sock = listen(host, port)
    app = create_app(model, config)
    port = sock.getsockname()[1]
    local = host in ("127.0.0.1", "localhost", "::1")
    where = ("this machine only (--host 0.0.0.0 opens it to the network)" if local
             else f"{host}: other machines can reach it")
    url_host = f"[{host}]" if ":" in host else host
    print(f"sketch-rnn serve: {name or 'the model'} ({config['preset']!r} preset) on http://{url_host}:{port}/, "
          f"listening on {where}; Ctrl-C stops", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
