"""A subscriber written against Resoto's published client library (resotolib 3.9.0 from PyPI), used
unchanged: wait_for_resotocore waits for the core, CoreActions registers and answers actions,
CoreFeedback sends progress and info, CoreEvents watches events. It runs in a virtualenv of its own
(tests/test_resoto_client.py makes it), never with this project's packages.

It prints one JSON line per thing it sees: {"connected": "actions"|"events"}, {"action": message_type,
"task": id}, {"event": message_type, "data": {...}}. It reads commands from stdin: "start" sends the
event start_collect_and_cleanup_workflow on /events, "release" lets held actions answer; at the end of
stdin it shuts down.

Every action gets progress of two parts and an info message, then action_done; the step given with
--fail answers action_error instead, and actions of the step given with --hold wait for "release"
(after their progress and info).
"""

import argparse
import json
import sys
import threading
from argparse import Namespace
from queue import Queue

from websocket import create_connection

from resotolib.args import ArgumentParser
from resotolib.core import wait_for_resotocore
from resotolib.core.actions import CoreActions, CoreFeedback
from resotolib.core.events import CoreEvents
from resotolib.jwt import encode_jwt_to_headers

STEPS = (
    "pre_collect collect post_collect pre_cleanup_plan cleanup_plan post_cleanup_plan "
    "pre_cleanup cleanup post_cleanup pre_generate_metrics generate_metrics post_generate_metrics"
).split()
printed = threading.Lock()
released = threading.Event()


def say(**line: object) -> None:
    with printed:
        print(json.dumps(line), flush=True)


class Actions(CoreActions):
    def on_open(self, ws: object) -> None:
        super().on_open(ws)
        say(connected="actions")


class Events(CoreEvents):
    def on_open(self, ws: object) -> None:
        super().on_open(ws)
        say(connected="events")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--id", default="resoto-client")
    parser.add_argument("--psk")
    parser.add_argument("--fail")
    parser.add_argument("--hold")
    args = parser.parse_args()
    ArgumentParser.args = Namespace(psk=args.psk)  # how Resoto's processes hand the PSK to the library
    ws_url = args.url.replace("http", "ws", 1)
    feedback: Queue = Queue()

    def answer(message: dict) -> dict:
        data, message_type = message["data"], message["message_type"]
        say(action=message_type, task=data["task"])
        report = CoreFeedback(data["task"], data["step"], message_type, feedback, ["example"])
        report.progress_done("account-1", 1, 1)
        report.progress_done("account-2", 0, 2)
        report.info(f"{message_type} from resotolib")
        if message_type == args.hold:
            released.wait()
        reply = {"task": data["task"], "step": data["step"]}
        if message_type == args.fail:
            return {"kind": "action_error", "message_type": message_type, "data": {**reply, "error": "AccessDenied"}}
        return {"kind": "action_done", "message_type": message_type, "data": reply}

    wait_for_resotocore(args.url, timeout=20)  # GET /system/ready, as Resoto's processes do at start-up
    subscriptions = {step: {"timeout": "30", "wait_for_completion": "True"} for step in STEPS}
    actions = Actions(args.id, args.url, ws_url, subscriptions, incoming_messages=feedback, message_processor=answer)
    events = Events(ws_url, {"task_started", "task_end"}, lambda m: say(event=m["message_type"], data=m["data"]))
    actions.daemon = events.daemon = True
    actions.start()
    events.start()
    for command in sys.stdin:
        if command.strip() == "start":
            headers: dict = {}
            if args.psk:
                encode_jwt_to_headers(headers, {}, args.psk)
            sender = create_connection(f"{ws_url}/events", header=headers)
            sender.send(json.dumps({"kind": "event", "message_type": "start_collect_and_cleanup_workflow", "data": {}}))
            sender.close()
        elif command.strip() == "release":
            released.set()
    actions.shutdown()
    events.shutdown()


if __name__ == "__main__":
    main()
