//! The controller's HTTP listeners: the read-only report pages (`GET /` lists the sweeps
//! under the results folder, `GET /sweeps/<id>/report` renders that sweep's report from
//! the Parquet files as they are now, a running sweep showing the points finished so far)
//! and the Prometheus metrics (`GET /metrics`, [`crate::metrics`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::ControllerError;
use crate::service::Controller;
use crate::tls_listener::TlsListener;
use fleetbench_results::layout::find_result_files;
use fleetbench_results::query::Filter;

const HTML: &str = "text/html; charset=utf-8";

/// The routes, reading `results_dir`.
pub fn router(results_dir: PathBuf) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/sweeps/{id}/report", get(report))
        .with_state(Arc::new(results_dir))
}

/// The metrics route: the exposition of `ctl`'s metrics, gauges read when scraped.
pub fn metrics_router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(ctl)
}

async fn metrics(State(ctl): State<Arc<Controller>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        ctl.metrics_text(),
    )
        .into_response()
}

/// Serves `routes` (`what` names them in the log) until `shutdown` is cancelled: over TLS
/// with `tls` (requiring a client certificate when it has a client CA), else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    what: &'static str,
    tls: Option<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ControllerError::io("http listener", e))?;
    let served = match tls {
        Some(config) => {
            info!(%addr, what, "listening (HTTPS)");
            let listener = TlsListener::new(listener, config, shutdown.clone())?;
            axum::serve(listener, routes)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        None => {
            info!(%addr, what, "listening (HTTP)");
            axum::serve(listener, routes)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    };
    served.map_err(|e| ControllerError::io(format!("http {addr}"), e))
}

fn error_page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

/// Sweep ids of the points files under `dir`, sorted.
fn sweep_ids(dir: &std::path::Path) -> Result<Vec<String>, ControllerError> {
    let ids: BTreeSet<String> = find_result_files(dir, None)?
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix(".points.parquet")
                .map(str::to_owned)
        })
        .collect();
    Ok(ids.into_iter().collect())
}

async fn index(State(dir): State<Arc<PathBuf>>) -> Response {
    let listed = {
        let dir = Arc::clone(&dir);
        tokio::task::spawn_blocking(move || sweep_ids(&dir)).await
    };
    match listed {
        Ok(Ok(ids)) => (
            [(header::CONTENT_TYPE, HTML)],
            fleetbench_report::html::index_page(&dir.display().to_string(), &ids),
        )
            .into_response(),
        Ok(Err(e)) => {
            warn!(error = %e, "listing sweeps failed");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn report(State(dir): State<Arc<PathBuf>>, UrlPath(id): UrlPath<String>) -> Response {
    // A sweep id is a file name stem: nothing that walks the tree.
    if id.is_empty() || id.contains('/') || id.contains('\\') || id.starts_with('.') {
        return error_page(StatusCode::BAD_REQUEST, "bad sweep id");
    }
    let filter = Filter {
        sweep: vec![id.clone()],
        ..Filter::default()
    };
    let rendered =
        tokio::task::spawn_blocking(move || fleetbench_report::html_page(&dir, &filter)).await;
    match rendered {
        Ok(Ok((_, 0))) => error_page(
            StatusCode::NOT_FOUND,
            &format!("no results for sweep {id} (yet)"),
        ),
        Ok(Ok((page, _))) => ([(header::CONTENT_TYPE, HTML)], live(&page)).into_response(),
        Ok(Err(e)) => {
            warn!(sweep = %id, error = %e, "report failed");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Seconds between reloads of a served report page.
const RELOAD_S: u32 = 30;

/// The served page reloads itself, so a browser left on a running sweep follows its points
/// (the written `index.html` does not).
fn live(page: &str) -> String {
    page.replacen(
        "<head>",
        &format!("<head>\n<meta http-equiv=\"refresh\" content=\"{RELOAD_S}\"/>"),
        1,
    )
}
