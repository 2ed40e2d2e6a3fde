//! Routes: which handler answers which path. Services register theirs
//! (`shard::Service::routes`); the server knows none of them.

use std::rc::Rc;

use super::request::Request;
use super::response::Response;
use super::server::{Handler, ResponseFuture};

/// A path prefix and its handler. The prefix matches whole segments:
/// `/api` answers `/api` and `/api/x`, not `/apix`.
pub struct Route {
    pub prefix: &'static str,
    pub handler: Rc<dyn Handler>,
    /// Answers the path itself (and with a trailing `/`), not paths below
    /// it: those stay with a shorter prefix of another service.
    pub exact: bool,
}

impl Route {
    pub fn new(prefix: &'static str, handler: Rc<dyn Handler>) -> Route {
        Route {
            prefix,
            handler,
            exact: false,
        }
    }

    /// A route for one path only (see `exact`).
    pub fn exact(path: &'static str, handler: Rc<dyn Handler>) -> Route {
        Route {
            prefix: path,
            handler,
            exact: true,
        }
    }

    fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.trim_end_matches('/')) {
            Some(rest) if self.exact => rest.is_empty() || rest == "/",
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// Every registered route; the longest matching prefix answers, and a path
/// no route matches gets a 404.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn add(&mut self, route: Route) {
        self.routes.push(route);
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl Handler for Router {
    fn handle(&self, request: Request) -> ResponseFuture {
        let route = self
            .routes
            .iter()
            .filter(|r| r.matches(&request.path))
            .max_by_key(|r| r.prefix.len());
        match route {
            Some(route) => route.handler.handle(request),
            None => Box::pin(std::future::ready(Response::error(404, "not found"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u16);

    impl Handler for Fixed {
        fn handle(&self, _request: Request) -> ResponseFuture {
            Box::pin(std::future::ready(Response::new(
                self.0,
                "text/plain",
                Vec::new(),
            )))
        }
    }

    fn status(router: &Router, path: &str) -> u16 {
        let request = Request {
            method: "GET".to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        futures_lite::future::block_on(router.handle(request)).status
    }

    #[test]
    fn longest_whole_segment_prefix_answers() {
        let mut router = Router::default();
        router.add(Route::new("/api", Rc::new(Fixed(201))));
        router.add(Route::new("/api/devices", Rc::new(Fixed(202))));
        router.add(Route::new("/xiaozhi/ota/", Rc::new(Fixed(203))));
        assert_eq!(status(&router, "/api"), 201);
        assert_eq!(status(&router, "/api/commands/x"), 201);
        assert_eq!(status(&router, "/api/devices/status"), 202);
        assert_eq!(status(&router, "/xiaozhi/ota"), 203);
        assert_eq!(status(&router, "/xiaozhi/ota/activate"), 203);
        assert_eq!(status(&router, "/apix"), 404);
        assert_eq!(status(&router, "/"), 404);
    }

    /// The relay's `GET /api/devices` beside the voice gateway's
    /// `/api/devices/status`: each keeps its own.
    #[test]
    fn an_exact_route_leaves_the_paths_below_it_to_a_shorter_prefix() {
        let mut router = Router::default();
        router.add(Route::new("/api", Rc::new(Fixed(201))));
        router.add(Route::exact("/api/devices", Rc::new(Fixed(202))));
        assert_eq!(status(&router, "/api/devices"), 202);
        assert_eq!(status(&router, "/api/devices/"), 202);
        assert_eq!(status(&router, "/api/devices/status"), 201);
        assert_eq!(status(&router, "/api/devicesx"), 201);
    }
}
