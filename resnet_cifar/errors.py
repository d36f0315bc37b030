"""User errors: one line naming the setting, file or value at fault, and what to do.

Modules below the command line name settings by their configuration keys (`log_root`,
`hparams_override`); resnet_main.py words the same line with the flag each setting came from,
so a Python caller and a command-line user each read the names they typed.
"""

import re


class UserError(ValueError):
    """A setting, file or value the user gave cannot be used; the message says why and what to do.

    `key` is the setting the message is about: the line starts with its name. `mentions` are
    other settings the message names in its text.
    """

    def __init__(self, message, key=None, mentions=()):
        self.message, self.key, self.mentions = message, key, tuple(mentions)
        super().__init__(self.line())

    def line(self, name=str):
        """The one line, with each setting named by name(key): the key itself, or its flag."""
        text = self.message
        for key in self.mentions:
            text = re.sub(rf'(?<![\w./-]){re.escape(key)}(?![\w/])', lambda _, key=key: name(key), text)
        return f'{name(self.key)}: {text}' if self.key else text
