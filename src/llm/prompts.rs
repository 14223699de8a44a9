//! Prompt templates as files: `NAME.LANG.jinja`, rendered with minijinja. The bundled ones are in
//! `pipelines/prompts` and built into the binary, so a pipeline anywhere finds them; a stage's
//! `prompts: DIR` puts that directory's files first, so a user can change one template and keep the
//! rest. A variable a template uses but the stage does not give is an error, never an empty string in
//! a prompt that was paid for.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

macro_rules! bundled {
    ($file:literal) => {
        (
            $file,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/pipelines/prompts/",
                $file
            )),
        )
    };
}

/// The bundled templates, by file name.
const BUNDLED: &[(&str, &str)] = &[
    bundled!("quality_annotate.en.jinja"),
    bundled!("quality_annotate.zh.jinja"),
    bundled!("qa_simple.en.jinja"),
    bundled!("qa_simple.zh.jinja"),
    bundled!("cot_segment.en.jinja"),
    bundled!("cot_segment.zh.jinja"),
    bundled!("cot_backward.en.jinja"),
    bundled!("cot_backward.zh.jinja"),
    bundled!("cot_forward.en.jinja"),
    bundled!("cot_forward.zh.jinja"),
    bundled!("knowledge_tags.en.jinja"),
    bundled!("knowledge_tags.zh.jinja"),
    bundled!("cot_rag.en.jinja"),
    bundled!("cot_rag.zh.jinja"),
    bundled!("rag_condense.en.jinja"),
    bundled!("rag_condense.zh.jinja"),
];

/// The templates of one directory over the bundled ones.
pub struct Prompts {
    dir: Option<PathBuf>,
    env: Environment<'static>,
}

impl Prompts {
    /// The bundled templates only.
    pub fn bundled() -> Self {
        Self::with_dir(None)
    }

    /// The templates of `dir`, then the bundled ones.
    pub fn new(dir: &Path) -> Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "the prompts directory {} does not exist",
            dir.display()
        );
        Ok(Self::with_dir(Some(dir.to_path_buf())))
    }

    fn with_dir(dir: Option<PathBuf>) -> Self {
        let mut env = Environment::new();
        let from_dir = dir.clone().map(minijinja::path_loader);
        env.set_loader(move |name| {
            if let Some(load) = &from_dir
                && let Some(source) = load(name)?
            {
                return Ok(Some(source));
            }
            Ok(BUNDLED
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, source)| source.to_string()))
        });
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        Self { dir, env }
    }

    /// The file of template `name` in language `lang` (`en`, `zh`).
    pub fn file_name(name: &str, lang: &str) -> String {
        format!("{name}.{lang}.jinja")
    }

    fn describe(&self, file: &str) -> String {
        match &self.dir {
            Some(d) if d.join(file).is_file() => d.join(file).display().to_string(),
            _ => format!("{file} (bundled)"),
        }
    }

    /// Template `name` in `lang`, rendered with `vars`.
    pub fn render(&self, name: &str, lang: &str, vars: impl Serialize) -> Result<String> {
        let file = Self::file_name(name, lang);
        let template = self
            .env
            .get_template(&file)
            .with_context(|| format!("prompt template {}", self.describe(&file)))?;
        template
            .render(vars)
            .with_context(|| format!("rendering {}", self.describe(&file)))
    }

    /// The template's source, which a run's identity covers: an edited prompt is a new run.
    pub fn source(&self, name: &str, lang: &str) -> Result<String> {
        let file = Self::file_name(name, lang);
        Ok(self
            .env
            .get_template(&file)
            .with_context(|| format!("prompt template {}", self.describe(&file)))?
            .source()
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn bundled() -> Prompts {
        Prompts::bundled()
    }

    #[test]
    fn every_bundled_template_is_listed_and_a_directory_overrides_one() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/prompts");
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                BUNDLED.iter().any(|(f, _)| *f == name),
                "{name} is not in BUNDLED"
            );
        }
        let mine = tempfile::tempdir().unwrap();
        std::fs::write(mine.path().join("qa_simple.en.jinja"), "Q&A of {{ text }}").unwrap();
        let p = Prompts::new(mine.path()).unwrap();
        let vars = context! { text => "x", pairs => 3 };
        assert_eq!(p.render("qa_simple", "en", &vars).unwrap(), "Q&A of x");
        assert!(p.render("qa_simple", "zh", &vars).unwrap().contains("问答"));
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
