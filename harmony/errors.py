"""HarmonyError: the one exception harmony raises for input it cannot render or parse.

It subclasses ValueError (bad input, as this kit's brief asks) and RuntimeError (openai-harmony's
HarmonyError is a RuntimeError), so code written for either catches it. Parser errors name the token
position; the `position` attribute holds it (None where no single token is to blame).
"""


class HarmonyError(ValueError, RuntimeError):
    def __init__(self, message: str, position: int | None = None):
        super().__init__(message if position is None else f"{message} (at token {position})")
        self.position = position
