"""The parser's position in the token list, and the syntax errors it reports there."""

from __future__ import annotations

from dra_driver.cel.lexer import SyntaxProblem, Token, tokenize


class TokenCursor:
    """The tokens of one expression, the current one, and the ids of the nodes built."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.next_id = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        """The current token; moves past it (never past the end-of-input token)."""
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def accept(self, kind: str) -> bool:
        """Move past the current token if it is a ``kind``; whether it was."""
        if self.tok.kind == kind:
            self.advance()
            return True
        return False

    def expect(self, kind: str, what: str | None = None) -> Token:
        """Move past a ``kind`` token, or raise ``expecting <what>``."""
        if self.tok.kind != kind:
            raise self.error(f"expecting {what or repr(kind)}")
        return self.advance()

    def error(self, expecting: str) -> SyntaxProblem:
        """``Syntax error: mismatched input '<current token>' <expecting>``, at its offset."""
        token = self.tok
        return SyntaxProblem(
            f"Syntax error: mismatched input '{token.text}' {expecting}", token.offset
        )

    def new_id(self) -> int:
        """A node id unique within the tree."""
        self.next_id += 1
        return self.next_id
