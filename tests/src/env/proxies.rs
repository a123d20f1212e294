//! Outages for one environment only: a [`TcpProxy`] between the processes and PostgreSQL or
//! RabbitMQ (see [`TestEnvBuilder::amqp_via_proxy`](super::TestEnvBuilder::amqp_via_proxy)),
//! which a test stops and starts again while the shared servers keep serving other tests.

use super::TestEnv;
use crate::proxy::TcpProxy;

/// A proxy in front of a server and the URL that reaches the server through it.
pub(super) struct Proxied {
    /// The variable the long-running processes get `url` in.
    pub(super) var: &'static str,
    pub(super) proxy: TcpProxy,
    pub(super) url: String,
}

impl Proxied {
    /// A proxy to the host and port of `direct` (`default_port` when it names none), and
    /// `direct` with its host and port replaced by the proxy's.
    pub(super) async fn spawn(var: &'static str, direct: &str, default_port: u16) -> Proxied {
        use std::net::ToSocketAddrs;
        let mut url = url::Url::parse(direct)
            .unwrap_or_else(|e| panic!("{var} {direct:?} is not a URL: {e}"));
        let host = url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = url.port().unwrap_or(default_port);
        let target = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("{var}: cannot resolve {host}:{port}"));
        let proxy = TcpProxy::spawn(target).await;
        let pointed =
            url.set_host(Some("127.0.0.1")).is_ok() && url.set_port(Some(proxy.port())).is_ok();
        assert!(pointed, "{var}: cannot point {direct:?} at the proxy");
        Proxied {
            var,
            proxy,
            url: url.to_string(),
        }
    }
}

impl TestEnv {
    /// The proxy between the processes and RabbitMQ. Panics unless the environment was built
    /// with [`TestEnvBuilder::amqp_via_proxy`](super::TestEnvBuilder::amqp_via_proxy).
    pub fn amqp_proxy(&self) -> &TcpProxy {
        &self
            .amqp_proxy
            .as_ref()
            .expect("this TestEnv was built without amqp_via_proxy()")
            .proxy
    }

    /// The proxy between the processes and PostgreSQL. Panics unless the environment was
    /// built with
    /// [`TestEnvBuilder::database_via_proxy`](super::TestEnvBuilder::database_via_proxy).
    pub fn database_proxy(&self) -> &TcpProxy {
        &self
            .database_proxy
            .as_ref()
            .expect("this TestEnv was built without database_via_proxy()")
            .proxy
    }

    /// The value of `var` (such as `DATABASE_URL`) the long-running processes get: the proxy's
    /// URL when the variable goes through a proxy, else the base environment's value.
    pub fn process_env(&self, var: &str) -> Option<&str> {
        self.proxied()
            .find(|p| p.var == var)
            .map(|p| p.url.as_str())
            .or_else(|| self.env.get(var).map(String::as_str))
    }

    pub(super) fn proxied(&self) -> impl Iterator<Item = &Proxied> {
        self.amqp_proxy.iter().chain(self.database_proxy.iter())
    }
}
