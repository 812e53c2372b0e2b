//! A single-pass SQL lexer: words, quoted identifiers, punctuation; it skips whitespace,
//! comments, string literals, binds and dollar-quoted bodies, and reports unterminated ones.

/// Marker error: a string, comment, quoted identifier or dollar quote never ends.
pub(super) struct Unterminated;

/// One lexical token; comments and whitespace are skipped.
#[derive(Clone, Copy)]
pub(super) enum Token<'a> {
    /// An unquoted identifier or keyword, `[A-Za-z_][A-Za-z0-9_$]*`.
    Word(&'a str),
    /// The raw content of a `"..."` or `` `...` `` quoted identifier.
    Quoted(&'a str),
    /// A PostgreSQL Unicode-escaped identifier `U&"..."`: its name is not its text, so it
    /// never matches a name (the classifier sends such statements to the primary).
    UnicodeQuoted,
    /// A single ASCII punctuation byte (including the `?` bind and a lone `$`).
    Punct(u8),
    /// A string literal, number, `$1` bind, dollar-quoted body or non-ASCII character.
    Other,
}

/// A single-pass SQL lexer over bytes. Token boundaries always fall on ASCII bytes, so the
/// slices it hands out are valid `str` slices.
#[derive(Clone)]
pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
    /// MySQL's dialect: `#` comments, `--` comments only before a space, backslash escapes
    /// in strings, `"..."` strings, and the content of `/*! ... */` (and MariaDB's
    /// `/*M! ... */`) comments run as code.
    pub(super) mysql: bool,
    /// Inside a MySQL executable comment: its `*/` is trivia.
    exec_comment: bool,
    /// Where the last token began.
    token_start: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `src`; `mysql` turns on MySQL's executable comments.
    pub(super) fn new(src: &'a str, mysql: bool) -> Self {
        Lexer {
            src,
            pos: 0,
            mysql,
            exec_comment: false,
            token_start: 0,
        }
    }
}

impl<'a> Lexer<'a> {
    /// The text of the last token returned.
    pub(super) fn last_token(&self) -> &'a str {
        self.src.get(self.token_start..self.pos).unwrap_or("")
    }

    /// The byte `offset` bytes ahead of the position, if any.
    fn byte(&self, offset: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + offset).copied()
    }

    /// Advances over bytes for which `keep` holds.
    fn eat_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.byte(0).is_some_and(&keep) {
            self.pos += 1;
        }
    }

    /// The next token, `None` at the end, or an error for an unterminated construct.
    pub(super) fn next_token(&mut self) -> Result<Option<Token<'a>>, Unterminated> {
        self.skip_trivia()?;
        let Some(b) = self.byte(0) else {
            return Ok(None);
        };
        let start = self.pos;
        self.token_start = start;
        let token = match b {
            b'\'' => {
                self.pos += 1;
                self.quoted(b'\'', self.mysql)?;
                Token::Other
            }
            // MySQL: a string, with backslash escapes (unless the server runs ANSI_QUOTES)
            b'"' if self.mysql => {
                self.pos += 1;
                self.quoted(b'"', true)?;
                Token::Other
            }
            b'e' | b'E' if self.byte(1) == Some(b'\'') => {
                self.pos += 2;
                self.quoted(b'\'', true)?;
                Token::Other
            }
            b'u' | b'U' if self.byte(1) == Some(b'&') && self.byte(2) == Some(b'"') => {
                self.pos += 3;
                self.quoted(b'"', false)?;
                Token::UnicodeQuoted
            }
            b'"' | b'`' => {
                self.pos += 1;
                self.quoted(b, false)?;
                Token::Quoted(&self.src[start + 1..self.pos - 1])
            }
            b'$' => self.dollar()?,
            _ if is_ident_start(b) => {
                self.eat_while(is_ident_char);
                Token::Word(&self.src[start..self.pos])
            }
            _ if b.is_ascii_digit() => {
                self.eat_while(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
                Token::Other
            }
            _ if b.is_ascii() => {
                self.pos += 1;
                Token::Punct(b)
            }
            _ => {
                // A non-ASCII character: its lead byte and continuation bytes.
                self.pos += 1;
                self.eat_while(|c| c & 0xC0 == 0x80);
                Token::Other
            }
        };
        Ok(Some(token))
    }

    /// Skips whitespace, `--` line comments and (nested) `/* */` block comments; in MySQL's
    /// dialect also `#` comments and the markers of executable comments, whose content is
    /// lexed as code (MySQL runs it).
    fn skip_trivia(&mut self) -> Result<(), Unterminated> {
        loop {
            match (self.byte(0), self.byte(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                // MySQL: `--` starts a comment only before whitespace or a control byte
                // (`1--1` is `1 - -1`)
                (Some(b'-'), Some(b'-'))
                    if !self.mysql
                        || self
                            .byte(2)
                            .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
                {
                    self.eat_while(|c| c != b'\n')
                }
                (Some(b'#'), _) if self.mysql => self.eat_while(|c| c != b'\n'),
                (Some(b'/'), Some(b'*')) if self.mysql && self.executable_comment() => {}
                (Some(b'*'), Some(b'/')) if self.exec_comment => {
                    self.pos += 2;
                    self.exec_comment = false;
                }
                (Some(b'/'), Some(b'*')) => self.block_comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// At `/*`: if it opens a MySQL `/*!NNNNN` or MariaDB `/*M!NNNNN` executable comment,
    /// steps over the marker (its content is code) and says so.
    fn executable_comment(&mut self) -> bool {
        let marker = match (self.byte(2), self.byte(3)) {
            (Some(b'!'), _) => 3,
            (Some(b'M'), Some(b'!')) => 4,
            _ => return false,
        };
        self.pos += marker;
        self.eat_while(|c| c.is_ascii_digit());
        self.exec_comment = true;
        true
    }

    /// Skips a block comment starting at `/*`; nested comments must close too.
    fn block_comment(&mut self) -> Result<(), Unterminated> {
        self.pos += 2;
        let mut depth = 1usize;
        loop {
            match (self.byte(0), self.byte(1)) {
                (None, _) => return Err(Unterminated),
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips past the closing `close` byte. A doubled `close` is an escaped one; with
    /// `backslash`, a `\` escapes the next byte.
    fn quoted(&mut self, close: u8, backslash: bool) -> Result<(), Unterminated> {
        loop {
            match self.byte(0) {
                None => return Err(Unterminated),
                Some(b'\\') if backslash => self.pos += 2,
                Some(c) if c == close => {
                    self.pos += 1;
                    if self.byte(0) != Some(close) {
                        return Ok(());
                    }
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Lexes at a `$`: a `$1` bind, a `$tag$ ... $tag$` / `$$ ... $$` body, or a lone `$`.
    fn dollar(&mut self) -> Result<Token<'a>, Unterminated> {
        let start = self.pos;
        self.pos += 1;
        match self.byte(0) {
            Some(c) if c.is_ascii_digit() => {
                self.eat_while(|c| c.is_ascii_digit());
                return Ok(Token::Other);
            }
            Some(b'$') => {}
            Some(c) if is_ident_start(c) => {
                let mut end = self.pos;
                let bytes = self.src.as_bytes();
                while bytes
                    .get(end)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    end += 1;
                }
                if bytes.get(end) != Some(&b'$') {
                    return Ok(Token::Punct(b'$'));
                }
                self.pos = end;
            }
            _ => return Ok(Token::Punct(b'$')),
        }
        self.pos += 1; // the `$` closing the opening tag
        let tag = &self.src[start..self.pos];
        match self.src[self.pos..].find(tag) {
            Some(offset) => {
                self.pos += offset + tag.len();
                Ok(Token::Other)
            }
            None => Err(Unterminated),
        }
    }
}

/// Whether `b` can start a bare word.
pub(super) fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Whether `b` can continue a bare word.
pub(super) fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}
