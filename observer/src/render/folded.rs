//! Folded stacks (`outermost;…;innermost value`), the input of flame graph
//! tools: one line per site holding outstanding bytes.

use crate::analyse::Report;
use crate::symbolize::Frame;

pub fn render(report: &Report) -> String {
    lines(report).into_iter().map(|line| line + "\n").collect()
}

/// One line per site with outstanding bytes, value = bytes.
pub fn lines(report: &Report) -> Vec<String> {
    report
        .sites
        .iter()
        .filter(|site| site.bytes > 0)
        .map(|site| {
            let stack: Vec<String> = site.frames.iter().rev().map(frame_name).collect();
            let stack = if stack.is_empty() {
                "[stack not captured]".to_string()
            } else {
                stack.join(";")
            };
            format!("{stack} {}", site.bytes)
        })
        .collect()
}

/// A frame's name without the characters the folded format reserves.
fn frame_name(frame: &Frame) -> String {
    let name = frame
        .function
        .clone()
        .unwrap_or_else(|| format!("{:#x}", frame.address));
    name.replace(';', ":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::group::tests::frame;

    #[test]
    fn names_are_sanitized() {
        let mut f = frame("<a as b>::c; d", 1);
        assert_eq!(frame_name(&f), "<a as b>::c: d");
        f.function = None;
        assert_eq!(frame_name(&f), "0x1001");
    }
}
