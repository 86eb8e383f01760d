//! Property tests of `{{variable}}` templates: any text parses or is refused without a panic; values go in once, as
//! data; every missing variable is named; text without placeholders comes back as it was.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// A piece of a generated template.
#[derive(Clone, Debug)]
enum Part {
    /// Text without `{` (so it cannot open a placeholder, nor make one with the braces after it).
    Text(String),
    /// A placeholder, with spaces inside its braces or not.
    Variable { name: String, left: usize, right: usize },
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        prop_oneof!["[^{]{0,12}", "[a }\n]{0,6}"].prop_map(Part::Text),
        (name(), 0usize..2, 0usize..2).prop_map(|(name, left, right)| Part::Variable { name, left, right }),
    ]
}

/// Variable names: mostly from a few, so that values and placeholders meet.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-c]{1,2}", 1 => "[A-Za-z0-9_.-]{1,6}"]
}

fn template_text(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            Part::Variable { name, left, right } => {
                format!("{{{{{}{name}{}}}}}", " ".repeat(*left), " ".repeat(*right))
            }
        })
        .collect()
}

/// Values that look like templates themselves.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![".{0,8}", "\\{\\{[a-z]{1,3}\\}\\}", "[{} a-z]{0,10}"]
}

proptest! {
    #![proptest_config(config())]

    /// Any text: parsed or refused with a message, never a panic; what parses renders or names what is missing.
    #[test]
    fn props_template_any_text_parses_or_is_refused(text in prop_oneof![".{0,40}", "[{} a-z_.-]{0,40}"]) {
        match Template::parse(&text) {
            Ok(template) => {
                let variables = template.variables();
                match template.render(|_| None) {
                    Ok(out) => {
                        prop_assert!(variables.is_empty());
                        prop_assert_eq!(&out, &text);
                    }
                    Err(missing) => prop_assert_eq!(missing, variables.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>()),
                }
                let filled = template.render(|name| Some(format!("<{name}>")));
                prop_assert!(filled.is_ok(), "{:?}", filled);
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    /// Generated templates: each placeholder takes its value as it is (a value holding `{{x}}` stays `{{x}}`),
    /// the text around them is kept, and the variables come in order of first use.
    #[test]
    fn props_template_values_go_in_once_as_data(
        parts in prop::collection::vec(part(), 0..10),
        values in prop::collection::btree_map(name(), value(), 0..6),
    ) {
        let text = template_text(&parts);
        let template = Template::parse(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        let mut order: Vec<&str> = Vec::new();
        let mut expected = String::new();
        let mut missing: Vec<String> = Vec::new();
        for part in &parts {
            match part {
                Part::Text(t) => expected.push_str(t),
                Part::Variable { name, .. } => {
                    if !order.contains(&name.as_str()) {
                        order.push(name);
                    }
                    match values.get(name) {
                        Some(v) => expected.push_str(v),
                        None if !missing.contains(name) => missing.push(name.clone()),
                        None => {}
                    }
                }
            }
        }
        prop_assert_eq!(&template.variables(), &order);
        let rendered = template.render(|name| values.get(name).cloned());
        if missing.is_empty() {
            prop_assert_eq!(rendered, Ok(expected));
        } else {
            prop_assert_eq!(rendered, Err(missing));
        }
        // Every variable given: the output is the text with each value in place, once.
        let all: BTreeMap<&str, String> = order.iter().map(|n| (*n, values.get(*n).cloned().unwrap_or_else(|| "{{x}}".into()))).collect();
        let mut filled = String::new();
        for part in &parts {
            match part {
                Part::Text(t) => filled.push_str(t),
                Part::Variable { name, .. } => filled.push_str(&all[name.as_str()]),
            }
        }
        prop_assert_eq!(template.render(|name| all.get(name).cloned()), Ok(filled));
    }

    /// Text without `{{` is its own rendering, whatever the values.
    #[test]
    fn props_template_without_placeholders_is_unchanged(text in prop_oneof![".{0,40}", "[{} a-z]{0,40}"]) {
        prop_assume!(!text.contains("{{"));
        let template = Template::parse(&text).map_err(TestCaseError::fail)?;
        prop_assert!(template.variables().is_empty());
        prop_assert_eq!(template.render(|_| None), Ok(text.clone()));
        prop_assert_eq!(template.render(|_| Some("{{x}}".into())), Ok(text));
    }

    /// A placeholder whose name breaks the rules, or that is never closed, is refused.
    #[test]
    fn props_template_bad_placeholders_are_refused(
        before in "[^{]{0,8}",
        name in prop_oneof!["[a-z]{1,3}[ /!é{][a-z]{1,3}", Just(String::new()), Just("  ".to_owned())],
        closed in any::<bool>(),
    ) {
        let text = if closed { format!("{before}{{{{{name}}}}}") } else { format!("{before}{{{{{name}") };
        prop_assert!(Template::parse(&text).is_err(), "{:?}", text);
    }
}
