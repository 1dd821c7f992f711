//! The peer of flowstate's one-step plan `echo`: a Restate service whose one handler runs one
//! durable step (`ctx.run`, its result journaled by Restate) that echoes its input, and returns it.
//! Usage: svc [ADDR]   (default 127.0.0.1:9080)

use restate_sdk::prelude::*;
use restate_sdk::serde::Json;

struct Echo;

#[restate_sdk::service(name = "Echo")]
impl Echo {
    #[handler(name = "run")]
    async fn run(
        &self,
        ctx: Context<'_>,
        Json(input): Json<serde_json::Value>,
    ) -> Result<Json<serde_json::Value>, HandlerError> {
        let out = ctx.run(|| async move { Ok(Json(input)) }).await?;
        Ok(out)
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9080".to_owned());
    HttpServer::new(Endpoint::builder().bind(Echo).build())
        .listen_and_serve(addr.parse().expect("an address like 127.0.0.1:9080"))
        .await;
}
