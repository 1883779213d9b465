"""A step plugin in Python, built with componentize-py against wit/plugin.wit.

Proof that the contract file alone is enough: no Rust, no SDK.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.itsm_plugin_types import (
    Evidence,
    StepError_Fatal,
    StepOutcome,
)


class Step(exports.Step):
    def run(self, ctx):
        log.log(log.Level.INFO, f"hello from python, {ctx.subject}")
        outputs = {"language": "python", "subject": ctx.subject, "attempt": ctx.attempt}
        return StepOutcome(
            outputs=json.dumps(outputs),
            evidence=Evidence(
                summary=f"greeted {ctx.subject} from python",
                target=f"ticket:{ctx.ticket_id}",
                before=None,
                after=json.dumps({"greeted": True}),
            ),
        )

    def verify(self, ctx):
        return Evidence(
            summary=f"{ctx.subject} was greeted from python",
            target=f"ticket:{ctx.ticket_id}",
            before=None,
            after=None,
        )

    def compensate(self, ctx):
        raise Err(StepError_Fatal("python greeter cannot compensate"))
