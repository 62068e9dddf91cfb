//! Contexts: one kernel each, with its own language and working directory.
//! Every language has a default context (python and javascript started
//! eagerly at start-up, the others on first use).

use crate::error::{Error, Result};
use crate::kernel::{Kernel, KernelSpec};
use crate::language::Language;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Mutex;

/// A context as the SDK sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContextInfo {
    /// Opaque id.
    pub id: String,
    /// Normalised language name.
    pub language: String,
    /// The kernel's working directory.
    pub cwd: String,
}

/// One context: a language, a cwd and the kernel currently serving them.
#[derive(Debug)]
pub struct Context {
    id: String,
    language: Language,
    cwd: PathBuf,
    /// Replaced on restart (and when the kernel died); held while replacing.
    kernel: Mutex<Arc<Kernel>>,
}

impl Context {
    /// The context as the SDK sees it.
    pub fn info(&self) -> ContextInfo {
        ContextInfo {
            id: self.id.clone(),
            language: self.language.name().into(),
            cwd: self.cwd.to_string_lossy().into_owned(),
        }
    }
}

/// How kernels are started.
#[derive(Debug, Clone)]
pub struct KernelSettings {
    /// The kernel command per language; a language without one is unavailable.
    pub specs: HashMap<Language, KernelSpec>,
    /// Where connection files and ipc sockets go.
    pub run_root: PathBuf,
    /// Working directory of contexts created without one.
    pub default_cwd: PathBuf,
    /// How often a silent execution sends a keepalive line.
    pub keepalive: Duration,
}

/// All contexts.
#[derive(Debug)]
pub struct Contexts {
    settings: KernelSettings,
    by_id: RwLock<HashMap<String, Arc<Context>>>,
    /// The default context's id per language; each held while that
    /// language's default context is created.
    defaults: HashMap<Language, Mutex<Option<String>>>,
}

impl Contexts {
    /// No contexts yet.
    pub fn new(settings: KernelSettings) -> Self {
        let defaults = crate::language::ALL.iter().map(|l| (*l, Mutex::default())).collect();
        Contexts { settings, by_id: RwLock::default(), defaults }
    }

    /// The languages with a kernel command, for error messages.
    pub fn available(&self) -> String {
        crate::language::ALL
            .iter()
            .filter(|l| self.settings.specs.contains_key(l))
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The language named as the SDK sends it (see [`Language::parse`]), if
    /// it is one this interpreter knows.
    pub fn language(&self, name: Option<&str>) -> Result<Language> {
        Language::parse(name).map_err(|language| Error::NoKernel { language, available: self.available() })
    }

    fn spec(&self, language: Language) -> Result<&KernelSpec> {
        self.settings
            .specs
            .get(&language)
            .ok_or_else(|| Error::NoKernel { language: language.name().into(), available: self.available() })
    }

    /// Creates a context and starts its kernel.
    pub async fn create(&self, language: Language, cwd: Option<&str>) -> Result<Arc<Context>> {
        let spec = self.spec(language)?;
        let cwd = match cwd.filter(|c| !c.is_empty()) {
            Some(c) => PathBuf::from(c),
            None => self.settings.default_cwd.clone(),
        };
        if !cwd.is_absolute() || !cwd.is_dir() {
            return Err(Error::BadRequest(format!("cwd {} is not an existing absolute directory", cwd.display())));
        }
        let kernel = self.start_kernel(spec, &cwd).await?;
        let context = Arc::new(Context {
            id: uuid::Uuid::new_v4().to_string(),
            language,
            cwd,
            kernel: Mutex::new(Arc::new(kernel)),
        });
        self.write()?.insert(context.id.clone(), context.clone());
        Ok(context)
    }

    async fn start_kernel(&self, spec: &KernelSpec, cwd: &Path) -> Result<Kernel> {
        Kernel::start(spec, &self.settings.run_root, cwd, self.settings.keepalive).await
    }

    /// The context with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Context>> {
        self.read()?.get(id).cloned().ok_or_else(|| Error::NotFound(format!("Context {id} not found")))
    }

    /// The language's default context, created (and its kernel started) if
    /// there is none yet.
    pub async fn default_for(&self, language: Language) -> Result<Arc<Context>> {
        let slot = self.defaults.get(&language).ok_or_else(|| Error::Kernel(format!("no slot for {language}")))?;
        let mut default = slot.lock().await;
        if let Some(context) = default.as_ref().and_then(|id| self.read().ok()?.get(id).cloned()) {
            return Ok(context);
        }
        let context = self.create(language, None).await?;
        *default = Some(context.id.clone());
        Ok(context)
    }

    /// Every context.
    pub fn list(&self) -> Result<Vec<ContextInfo>> {
        let mut all: Vec<ContextInfo> = self.read()?.values().map(|c| c.info()).collect();
        all.sort_by(|a, b| (&a.language, &a.id).cmp(&(&b.language, &b.id)));
        Ok(all)
    }

    /// Removes a context and kills its kernel.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let context = self.write()?.remove(id).ok_or_else(|| Error::NotFound(format!("Context {id} not found")))?;
        context.kernel.lock().await.kill();
        Ok(())
    }

    /// The context's kernel, replaced first if it died.
    pub async fn kernel(&self, context: &Context) -> Result<Arc<Kernel>> {
        let mut kernel = context.kernel.lock().await;
        if kernel.is_dead() {
            tracing::warn!("context {}: kernel is gone, starting a new one", context.id);
            *kernel = Arc::new(self.start_kernel(self.spec(context.language)?, &context.cwd).await?);
        }
        Ok(kernel.clone())
    }

    /// Replaces the context's kernel with a fresh one (state gone, same id and cwd).
    pub async fn restart(&self, id: &str) -> Result<()> {
        let context = self.get(id)?;
        let mut kernel = context.kernel.lock().await;
        kernel.kill();
        *kernel = Arc::new(self.start_kernel(self.spec(context.language)?, &context.cwd).await?);
        Ok(())
    }

    /// Kills every kernel now (shutdown).
    pub fn kill_all(&self) {
        if let Ok(map) = self.read() {
            for context in map.values() {
                if let Ok(kernel) = context.kernel.try_lock() {
                    kernel.kill_and_clean();
                }
            }
        }
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Context>>>> {
        self.by_id.read().map_err(|_| Error::Kernel("context map poisoned".into()))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Context>>>> {
        self.by_id.write().map_err(|_| Error::Kernel("context map poisoned".into()))
    }
}
