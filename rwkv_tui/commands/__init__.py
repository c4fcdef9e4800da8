"""Sub-commands of the `rwkv-tui` CLI, one module each.

Every module here defines `register(subparsers)` which adds its parser and sets
`handler=` to a function taking the parsed args and returning an exit code. Modules
import torch and the trainer inside their handlers only, so `rwkv-tui --help` and the
wizard start fast.
"""
