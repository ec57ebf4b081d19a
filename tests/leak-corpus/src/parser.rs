//! Nested lists of numbers: `[[1,2],[[3]]]`.

use bufpool::{BufPool, PooledBuf};

/// Nesting of the documents parsed: deep enough for a 40-level stack.
const NESTING: usize = 40;

#[derive(Debug)]
#[allow(dead_code)] // The values are what a caller would use.
pub enum Node {
    Number(u64),
    List(Vec<Node>),
}

#[derive(Debug)]
#[allow(dead_code)] // Read through Debug when reported.
pub enum ParseError {
    UnexpectedEnd,
    Unexpected(u8),
    BadNumber,
}

pub struct Parser<'a> {
    input: &'a [u8],
    at: usize,
    pool: &'a BufPool,
}

impl<'a> Parser<'a> {
    pub fn new(input: &'a [u8], pool: &'a BufPool) -> Self {
        Self { input, at: 0, pool }
    }

    pub fn parse_value(&mut self) -> Result<Node, ParseError> {
        match self.peek()? {
            b'[' => {
                let items = self.parse_list()?;
                Ok(Node::List(items))
            }
            b'0'..=b'9' => Ok(Node::Number(self.parse_number()?)),
            other => Err(ParseError::Unexpected(other)),
        }
    }

    fn parse_list(&mut self) -> Result<Vec<Node>, ParseError> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            if self.peek()? == b']' {
                self.at += 1;
                return Ok(items);
            }
            items.push(self.parse_value()?);
            if self.peek()? == b',' {
                self.at += 1;
            }
        }
    }

    fn parse_number(&mut self) -> Result<u64, ParseError> {
        let mut digits = self.pool.allocate(32);
        while let Some(&byte) = self
            .input
            .get(self.at)
            .filter(|b| b.is_ascii_alphanumeric())
        {
            digits.put_u8(byte).map_err(|_| ParseError::BadNumber)?;
            self.at += 1;
        }
        let value = number(&digits)?;
        self.pool.release(digits);
        Ok(value)
    }

    fn peek(&self) -> Result<u8, ParseError> {
        self.input
            .get(self.at)
            .copied()
            .ok_or(ParseError::UnexpectedEnd)
    }
}

fn number(digits: &PooledBuf) -> Result<u64, ParseError> {
    let text = std::str::from_utf8(digits.as_slice()).map_err(|_| ParseError::BadNumber)?;
    text.parse().map_err(|_| ParseError::BadNumber)
}

fn document(innermost: &str) -> String {
    format!("{}{innermost}{}", "[".repeat(NESTING), "]".repeat(NESTING))
}

/// Parses `count` good and `count` malformed documents.
pub fn run(count: usize) -> usize {
    let pool = BufPool::new();
    for index in 0..count {
        let good = document(&format!("{index},{}", index + 1));
        Parser::new(good.as_bytes(), &pool)
            .parse_value()
            .expect("a good document");
        let bad = document(&format!("{index}x"));
        let _ = Parser::new(bad.as_bytes(), &pool).parse_value();
    }
    pool.outstanding_buffers()
}
