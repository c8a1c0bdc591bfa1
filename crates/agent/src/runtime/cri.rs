//! The real runtime: a CRI `runtime.v1` gRPC client of containerd over its unix socket.
//!
//! The channel connects lazily and reconnects by itself, so a containerd restart costs the
//! calls made while it is down (they fail with `Unavailable`) and nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{api, Result, Runtime, RuntimeError};

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pulls can take long on a slow registry.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// A CRI client of one runtime socket.
#[derive(Clone)]
pub struct CriRuntime {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriRuntime {
    /// A client of the CRI socket at `socket` (connects on first use).
    pub fn new(socket: &Path) -> Result<CriRuntime> {
        let path = socket.to_path_buf();
        // The URI is unused: every connection goes to the unix socket.
        let endpoint = Endpoint::from_static("http://cri.invalid");
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }));
        Ok(CriRuntime {
            socket: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

fn rpc_error(op: &'static str, what: &str, status: tonic::Status) -> RuntimeError {
    if status.code() == tonic::Code::NotFound {
        RuntimeError::NotFound(what.to_string())
    } else {
        RuntimeError::Rpc {
            op,
            status: Box::new(status),
        }
    }
}

#[async_trait]
impl Runtime for CriRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let resp = self
            .runtime
            .clone()
            .version(request(
                api::VersionRequest {
                    version: "v1".to_string(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("Version", "runtime", s))?;
        Ok(resp.into_inner())
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String> {
        let resp = self
            .runtime
            .clone()
            .run_pod_sandbox(request(
                api::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("RunPodSandbox", "sandbox", s))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(request(
                api::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("StopPodSandbox", id, s))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        match self
            .runtime
            .clone()
            .remove_pod_sandbox(request(
                api::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                },
                CALL_TIMEOUT,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(rpc_error("RemovePodSandbox", id, s)),
        }
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus> {
        let resp = self
            .runtime
            .clone()
            .pod_sandbox_status(request(
                api::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_string(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("PodSandboxStatus", id, s))?;
        resp.into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    async fn list_pod_sandboxes(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::PodSandbox>> {
        let resp = self
            .runtime
            .clone()
            .list_pod_sandbox(request(
                api::ListPodSandboxRequest {
                    filter: Some(api::PodSandboxFilter {
                        label_selector: labels,
                        ..Default::default()
                    }),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("ListPodSandbox", "sandboxes", s))?;
        Ok(resp.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let resp = self
            .runtime
            .clone()
            .create_container(request(
                api::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("CreateContainer", sandbox_id, s))?;
        Ok(resp.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(request(
                api::StartContainerRequest {
                    container_id: id.to_string(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("StartContainer", id, s))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let secs = u64::try_from(timeout.max(0)).unwrap_or(0);
        match self
            .runtime
            .clone()
            .stop_container(request(
                api::StopContainerRequest {
                    container_id: id.to_string(),
                    timeout,
                },
                CALL_TIMEOUT + Duration::from_secs(secs),
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) => Err(rpc_error("StopContainer", id, s)),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        match self
            .runtime
            .clone()
            .remove_container(request(
                api::RemoveContainerRequest {
                    container_id: id.to_string(),
                },
                CALL_TIMEOUT,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(rpc_error("RemoveContainer", id, s)),
        }
    }

    async fn list_containers(
        &self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::Container>> {
        let resp = self
            .runtime
            .clone()
            .list_containers(request(
                api::ListContainersRequest {
                    filter: Some(api::ContainerFilter {
                        label_selector: labels,
                        ..Default::default()
                    }),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("ListContainers", "containers", s))?;
        Ok(resp.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus> {
        let resp = self
            .runtime
            .clone()
            .container_status(request(
                api::ContainerStatusRequest {
                    container_id: id.to_string(),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("ContainerStatus", id, s))?;
        resp.into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<api::ExecSyncResponse> {
        let secs = u64::try_from(timeout.max(0)).unwrap_or(0);
        let resp = self
            .runtime
            .clone()
            .exec_sync(request(
                api::ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd,
                    timeout,
                },
                CALL_TIMEOUT + Duration::from_secs(secs),
            ))
            .await;
        match resp {
            Ok(r) => Ok(r.into_inner()),
            // containerd 1.6 kills the process and answers Unknown "timeout 1s exceeded:
            // context deadline exceeded"; newer ones answer DeadlineExceeded.
            Err(s)
                if timeout > 0
                    && (s.code() == tonic::Code::DeadlineExceeded
                        || (s.message().contains("timeout")
                            && s.message().contains("exceeded"))) =>
            {
                Err(RuntimeError::Timeout {
                    op: "ExecSync",
                    seconds: timeout,
                })
            }
            Err(s) => Err(rpc_error("ExecSync", id, s)),
        }
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let resp = self
            .images
            .clone()
            .image_status(request(
                api::ImageStatusRequest {
                    image: Some(api::ImageSpec {
                        image: image.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                },
                CALL_TIMEOUT,
            ))
            .await;
        match resp {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(rpc_error("ImageStatus", image, s)),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let resp = self
            .images
            .clone()
            .pull_image(request(
                api::PullImageRequest {
                    image: Some(api::ImageSpec {
                        image: image.to_string(),
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config,
                },
                PULL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("PullImage", image, s))?;
        Ok(resp.into_inner().image_ref)
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let id = req.container_id.clone();
        let resp = self
            .runtime
            .clone()
            .exec(request(req, CALL_TIMEOUT))
            .await
            .map_err(|s| rpc_error("Exec", &id, s))?;
        Ok(resp.into_inner().url)
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let id = req.container_id.clone();
        let resp = self
            .runtime
            .clone()
            .attach(request(req, CALL_TIMEOUT))
            .await
            .map_err(|s| rpc_error("Attach", &id, s))?;
        Ok(resp.into_inner().url)
    }

    async fn port_forward(&self, sandbox_id: &str) -> Result<String> {
        let resp = self
            .runtime
            .clone()
            .port_forward(request(
                api::PortForwardRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    port: Vec::new(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(|s| rpc_error("PortForward", sandbox_id, s))?;
        Ok(resp.into_inner().url)
    }
}
