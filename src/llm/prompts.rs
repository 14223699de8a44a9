//! Prompt templates as files: `NAME.LANG.jinja` under a prompts directory (the bundled ones are in
//! `pipelines/prompts`), rendered with minijinja. A variable a template uses but the stage does not
//! give is an error, never an empty string in a prompt that was paid for.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The templates of one directory.
pub struct Prompts {
    dir: PathBuf,
    env: Environment<'static>,
}

impl Prompts {
    pub fn new(dir: &Path) -> Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "the prompts directory {} does not exist",
            dir.display()
        );
        let mut env = Environment::new();
        env.set_loader(minijinja::path_loader(dir));
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        Ok(Self {
            dir: dir.to_path_buf(),
            env,
        })
    }

    /// The file of template `name` in language `lang` (`en`, `zh`).
    pub fn file_name(name: &str, lang: &str) -> String {
        format!("{name}.{lang}.jinja")
    }

    /// Template `name` in `lang`, rendered with `vars`.
    pub fn render(&self, name: &str, lang: &str, vars: impl Serialize) -> Result<String> {
        let file = Self::file_name(name, lang);
        let template = self
            .env
            .get_template(&file)
            .with_context(|| format!("prompt template {}", self.dir.join(&file).display()))?;
        template
            .render(vars)
            .with_context(|| format!("rendering {}", self.dir.join(&file).display()))
    }

    /// The template's source, which a run's identity covers: an edited prompt is a new run.
    pub fn source(&self, name: &str, lang: &str) -> Result<String> {
        let path = self.dir.join(Self::file_name(name, lang));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn bundled() -> Prompts {
        Prompts::new(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/prompts")).unwrap()
    }

    #[test]
    fn the_bundled_quality_prompts_render_in_both_languages() {
        let p = bundled();
        let doc = "Photosynthesis turns light into chemical energy.\n光合作用把光能转化为化学能。";
        for lang in ["en", "zh"] {
            let prompt = p
                .render("quality_annotate", lang, context! { text => doc })
                .unwrap();
            assert!(
                prompt.contains(doc),
                "{lang}: the document is in the prompt"
            );
            assert!(
                prompt.contains("\"score\""),
                "{lang}: the JSON form is asked for"
            );
            assert!(!prompt.contains("{{"), "{lang}: nothing left unrendered");
        }
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_the_file() {
        let e = format!(
            "{:#}",
            bundled()
                .render("quality_annotate", "en", context! { txt => "x" })
                .unwrap_err()
        );
        assert!(e.contains("quality_annotate.en.jinja"), "{e}");
        assert!(e.contains("undefined"), "{e}");
    }

    #[test]
    fn a_missing_template_is_an_error_naming_the_file() {
        let e = format!(
            "{:#}",
            bundled()
                .render("quality_annotate", "fr", context! { text => "x" })
                .unwrap_err()
        );
        assert!(e.contains("quality_annotate.fr.jinja"), "{e}");
    }
}
