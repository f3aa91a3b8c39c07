#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the sse_parser fuzz target into
fuzz/corpus/sse_parser/ (edge-*.sse) and copies the real vLLM captures (vllm-*.sse).
Every input is one split-seed byte followed by the SSE stream. Run from anywhere."""
import json
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "corpus" / "sse_parser"
out.mkdir(parents=True, exist_ok=True)
fixtures = root.parent / "tests" / "fixtures" / "vllm-0.32-cpu"
for name in ["chat-stream", "chat-stream-32", "completions-stream"]:
    (out / f"vllm-0.32-{name}.sse").write_bytes(b"\x07" + (fixtures / f"{name}.sse").read_bytes())


def c(text, fin=None, key="content"):
    chunk = {"object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": {key: text}, "finish_reason": fin}]}
    return "data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n"


role = 'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
usage = 'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n'
done = "data: [DONE]\n\n"
cases = {
    "crlf-keepalive": (0x01, (": ping\n\n" + role + c("a") + ": ping\n\n" + c("b", "length") + usage + done).replace("\n", "\r\n")),
    "cr-only-separators": (0x02, role.replace("\n\n", "\r\r") + c("x").replace("\n\n", "\r\r") + done.replace("\n\n", "\r\r")),
    "mixed-separators": (0x03, role.replace("\n\n", "\n\r\n") + c("y").replace("\n\n", "\r\r\n") + c("z").replace("\n\n", "\n\n\r\n") + done),
    "utf8-multibyte": (0x04, role + c("é") + c("🙂") + c("日本語") + c("\u00ad\u200d") + done),
    "reasoning-first": (0x05, role + c("hm", key="reasoning_content") + c("so", key="reasoning") + c("ok", "stop") + usage + done),
    "error-vllm": (0x06, role + c("a") + 'data: {"error": {"message": "boom", "type": "InternalServerError", "code": 500}}\n\n'),
    "error-object": (0x07, role + 'data: {"object":"error","message":"out of memory","type":"BadRequestError","param":null,"code":400}\n\n'),
    "error-string": (0x08, 'data: {"error": "plain string"}\n\n'),
    "bad-json": (0x09, role + "data: {not json\n\n" + c("after")),
    "empty-data": (0x0a, "data:\n\ndata: \n\n" + c("a") + "data:   \n\n" + done),
    "multiline-data": (0x0b, 'data: {"choices":\ndata: [{"index":0,"delta":{"content":"two lines"}}]}\n\n' + done),
    "fields": (0x0c, "event: message\nid: 1\nretry: 10\n" + c("f")[:-1] + "\n" + "event: ping\n\n" + "data\n\n" + "data:[DONE]\n\n"),
    "usage-with-choices": (0x0d, 'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n' + done),
    "after-done": (0x0e, c("a") + done + c("ignored") + "data: garbage\n\n"),
    "truncated": (0x0f, role + c("a") + c("b")[:25]),
    "completions": (0x10, 'data: {"object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\ndata: {"choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n' + done),
    "wrong-types": (0x11, 'data: {"choices": 5}\n\ndata: {"choices":[{"delta":{"content":7}}]}\n\n'),
    "null-fields": (0x12, 'data: {"choices":[{"index":0,"delta":{"content":null,"reasoning_content":null},"finish_reason":null}],"usage":null,"error":null}\n\n'),
}
for name, (seed, text) in cases.items():
    (out / f"edge-{name}.sse").write_bytes(bytes([seed]) + text.encode())
(out / "edge-not-utf8.sse").write_bytes(
    b"\x13" + role.encode() + b'data: {"choices":[{"delta":{"content":"\xff\xfe"}}]}\n\n' + done.encode())
(out / "edge-utf8-overlong.sse").write_bytes(
    b"\x14" + b'data: {"choices":[{"delta":{"content":"\xc0\xaf \xed\xa0\x80"}}]}\n\n')
