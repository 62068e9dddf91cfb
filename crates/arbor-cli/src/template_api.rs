//! The template endpoints of the REST API (template-api.md): create a
//! build, upload COPY files, start and poll the build, list, show, delete.

use crate::client::{Client, SEGMENT};
use crate::error::Result;
use percent_encoding::utf8_percent_encode;
use reqwest::Method;
use serde_json::{json, Value};

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// What `POST /v3/templates` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    /// The template's id.
    pub template_id: String,
    /// The new build's id.
    pub build_id: String,
    /// The version the build will be (Arbor's extra field; 0 if absent).
    pub version: u64,
}

impl Client {
    /// `POST /v3/templates`: a new version (build) of template `name`.
    pub async fn create_template_build(
        &self,
        name: &str,
        cpu: Option<u32>,
        memory_mb: Option<u32>,
    ) -> Result<NewBuild> {
        let mut body = json!({ "name": name });
        if let Some(cpu) = cpu {
            body["cpuCount"] = json!(cpu);
        }
        if let Some(mb) = memory_mb {
            body["memoryMB"] = json!(mb);
        }
        let v = self.call(Method::POST, "/v3/templates", Some(&body)).await?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (template_id, build_id) = (text("templateID"), text("buildID"));
        if template_id.is_empty() || build_id.is_empty() {
            let url = self.url("/v3/templates");
            return Err(crate::Error::BadResponse { url, reason: "no templateID or buildID in the answer".into() });
        }
        Ok(NewBuild { template_id, build_id, version: v.get("version").and_then(Value::as_u64).unwrap_or(0) })
    }

    /// `GET /templates/{id}/files/{hash}`: `None` when the server has the
    /// files, else the URL to `PUT` their gzip tar to.
    pub async fn template_files_url(&self, template_id: &str, hash: &str) -> Result<Option<String>> {
        let path = format!("/templates/{}/files/{}", seg(template_id), seg(hash));
        let v = self.call(Method::GET, &path, None).await?;
        if v.get("present").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(None);
        }
        match v.get("url").and_then(Value::as_str) {
            Some(url) if !url.is_empty() => Ok(Some(url.to_string())),
            _ => Err(crate::Error::BadResponse {
                url: self.url(&path),
                reason: "files not present and no upload url".into(),
            }),
        }
    }

    /// `PUT`s a gzip tar to an upload URL given by the server.
    pub async fn upload_files(&self, url: &str, tar_gz: Vec<u8>) -> Result<()> {
        let req = self.request(Method::PUT, url).header("content-type", "application/gzip").body(tar_gz);
        self.send(req, url).await.map(drop)
    }

    /// `POST /v2/templates/{id}/builds/{buildID}`: starts the build.
    pub async fn start_template_build(&self, template_id: &str, build_id: &str, body: &Value) -> Result<()> {
        let path = format!("/v2/templates/{}/builds/{}", seg(template_id), seg(build_id));
        self.call_empty(Method::POST, &path, Some(body)).await
    }

    /// `GET /templates/{id}/builds/{buildID}/status?logsOffset=N`.
    pub async fn template_build_status(&self, template_id: &str, build_id: &str, offset: usize) -> Result<Value> {
        let path = format!("/templates/{}/builds/{}/status?logsOffset={offset}", seg(template_id), seg(build_id));
        self.call(Method::GET, &path, None).await
    }

    /// `GET /templates`: the latest version of each template.
    pub async fn list_templates(&self) -> Result<Vec<Value>> {
        match self.call(Method::GET, "/templates", None).await? {
            Value::Array(items) => Ok(items),
            _ => Err(crate::Error::BadResponse { url: self.url("/templates"), reason: "expected a JSON array".into() }),
        }
    }

    /// `GET /templates/{name[:version] or id}`: the template with its builds.
    pub async fn template_info(&self, template: &str) -> Result<Value> {
        self.call(Method::GET, &format!("/templates/{}", seg(template)), None).await
    }

    /// `DELETE /templates/{x}`: a template (all versions), one version
    /// (`name:version`, a build id) or a snapshot.
    pub async fn delete_template(&self, x: &str) -> Result<()> {
        self.call_empty(Method::DELETE, &format!("/templates/{}", seg(x)), None).await
    }
}
