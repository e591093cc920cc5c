//! The expression language: numbers, `+ - * / % ^`, parentheses, unary signs, constants and a
//! few functions. Grammar (`^` binds tightest and associates to the right):
//!
//! ```text
//! sum     = product (("+" | "-") product)*
//! product = unary (("*" | "/" | "%") unary)*
//! unary   = ("+" | "-") unary | power
//! power   = atom ("^" unary)?
//! atom    = number | name | name "(" sum ("," sum)* ")" | "(" sum ")"
//! ```

use std::fmt;

/// Nesting deeper than this is refused rather than risking the guest's stack.
const MAX_DEPTH: usize = 200;

#[derive(Debug, PartialEq)]
pub struct EvalError {
    /// 1-based character position in the expression, when the error has one.
    pub at: Option<usize>,
    pub message: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "at character {at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

pub fn evaluate(expression: &str) -> Result<f64, EvalError> {
    let mut parser = Parser { chars: expression.chars().collect(), pos: 0, depth: 0 };
    parser.skip_spaces();
    if parser.peek().is_none() {
        return Err(EvalError { at: None, message: "the expression is empty".into() });
    }
    let value = parser.sum()?;
    parser.skip_spaces();
    if let Some(c) = parser.peek() {
        return Err(parser.error(format!("unexpected `{c}`")));
    }
    if !value.is_finite() {
        return Err(EvalError { at: None, message: "the result is not a finite number".into() });
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn sum(&mut self) -> Result<f64, EvalError> {
        let mut value = self.product()?;
        loop {
            match self.next_operator(&['+', '-']) {
                Some('+') => value += self.product()?,
                Some(_) => value -= self.product()?,
                None => return Ok(value),
            }
        }
    }

    fn product(&mut self) -> Result<f64, EvalError> {
        let mut value = self.unary()?;
        loop {
            let Some(op) = self.next_operator(&['*', '/', '%']) else { return Ok(value) };
            let at = self.pos;
            let rhs = self.unary()?;
            if op != '*' && rhs == 0.0 {
                return Err(EvalError { at: Some(at + 1), message: "division by zero".into() });
            }
            match op {
                '*' => value *= rhs,
                '/' => value /= rhs,
                _ => value %= rhs,
            }
        }
    }

    fn unary(&mut self) -> Result<f64, EvalError> {
        self.descend()?;
        let value = match self.next_operator(&['+', '-']) {
            Some('-') => -self.unary()?,
            Some(_) => self.unary()?,
            None => self.power()?,
        };
        self.depth -= 1;
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, EvalError> {
        let base = self.atom()?;
        if self.next_operator(&['^']).is_some() {
            return Ok(base.powf(self.unary()?));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, EvalError> {
        self.skip_spaces();
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.name(),
            Some('(') => {
                self.pos += 1;
                let value = self.sum()?;
                self.expect(')')?;
                Ok(value)
            }
            Some(c) => Err(self.error(format!("expected a number, a name or `(`, found `{c}`"))),
            None => Err(self.error("the expression ends too early".into())),
        }
    }

    fn number(&mut self) -> Result<f64, EvalError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
            self.pos += 1;
        }
        if self.peek().is_some_and(|c| c == 'e' || c == 'E') {
            let exponent_start = self.pos;
            self.pos += 1;
            if self.peek().is_some_and(|c| c == '+' || c == '-') {
                self.pos += 1;
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                self.pos = exponent_start; // `2e` has no exponent: leave `e` to be reported as unexpected
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse::<f64>().map_err(|_| EvalError { at: Some(start + 1), message: format!("`{text}` is not a number") })
    }

    fn name(&mut self) -> Result<f64, EvalError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.skip_spaces();
        if self.peek() != Some('(') {
            return match name.as_str() {
                "pi" => Ok(std::f64::consts::PI),
                "e" => Ok(std::f64::consts::E),
                _ => Err(EvalError { at: Some(start + 1), message: format!("unknown name `{name}`") }),
            };
        }
        self.pos += 1;
        let mut args = vec![self.sum()?];
        while self.next_operator(&[',']).is_some() {
            args.push(self.sum()?);
        }
        self.expect(')')?;
        apply(&name, &args).map_err(|message| EvalError { at: Some(start + 1), message })
    }

    fn descend(&mut self) -> Result<(), EvalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("the expression nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn next_operator(&mut self, operators: &[char]) -> Option<char> {
        self.skip_spaces();
        let c = self.peek().filter(|c| operators.contains(c))?;
        self.pos += 1;
        Some(c)
    }

    fn expect(&mut self, wanted: char) -> Result<(), EvalError> {
        self.skip_spaces();
        match self.peek() {
            Some(c) if c == wanted => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.error(format!("expected `{wanted}`, found `{c}`"))),
            None => Err(self.error(format!("expected `{wanted}` before the end"))),
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn error(&self, message: String) -> EvalError {
        EvalError { at: Some(self.pos + 1), message }
    }
}

fn apply(name: &str, args: &[f64]) -> Result<f64, String> {
    let one = |f: fn(f64) -> f64| match args {
        [x] => Ok(f(*x)),
        _ => Err(format!("`{name}` takes one argument, got {}", args.len())),
    };
    match name {
        "sqrt" => match args {
            [x] if *x < 0.0 => Err("`sqrt` of a negative number".into()),
            _ => one(f64::sqrt),
        },
        "ln" | "log10" => match args {
            [x] if *x <= 0.0 => Err(format!("`{name}` needs a positive number")),
            _ => one(if name == "ln" { f64::ln } else { f64::log10 }),
        },
        "abs" => one(f64::abs),
        "floor" => one(f64::floor),
        "ceil" => one(f64::ceil),
        "round" => one(f64::round),
        "exp" => one(f64::exp),
        "sin" => one(f64::sin),
        "cos" => one(f64::cos),
        "tan" => one(f64::tan),
        "min" => Ok(args.iter().copied().fold(f64::INFINITY, f64::min)),
        "max" => Ok(args.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        _ => Err(format!("unknown function `{name}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::evaluate;

    #[test]
    fn arithmetic_follows_precedence() {
        assert_eq!(evaluate("(17*23)+4"), Ok(395.0));
        assert_eq!(evaluate("2+3*4"), Ok(14.0));
        assert_eq!(evaluate("2^3^2"), Ok(512.0));
        assert_eq!(evaluate("-2^2"), Ok(-4.0));
        assert_eq!(evaluate("10 % 4 - max(1, 2, 3)"), Ok(-1.0));
        assert_eq!(evaluate("1.5e2 / 3"), Ok(50.0));
    }

    #[test]
    fn bad_input_says_where() {
        assert_eq!(evaluate("1/0").unwrap_err().to_string(), "at character 3: division by zero");
        assert_eq!(evaluate("(1+2").unwrap_err().to_string(), "at character 5: expected `)` before the end");
        assert_eq!(evaluate("2 $ 3").unwrap_err().to_string(), "at character 3: unexpected `$`");
        assert_eq!(evaluate("").unwrap_err().to_string(), "the expression is empty");
        assert!(evaluate(&"(".repeat(10_000)).unwrap_err().message.contains("nests deeper"));
        assert!(evaluate(&"-".repeat(10_000)).unwrap_err().message.contains("nests deeper"));
    }
}
