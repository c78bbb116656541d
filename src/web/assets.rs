//! The page's files, embedded in the binary: no build step, nothing from
//! a CDN. Edit them in `web/page/`; a rebuild takes them in.
//!
//! It may import nothing else of the crate.

/// One file of the page.
pub(crate) struct Asset {
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static [u8],
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("page/index.html"),
};

/// The file served at `path`, if there is one.
pub(crate) fn find(path: &str) -> Option<Asset> {
    Some(match path {
        // The login URL loads the page, which sends the token in its
        // fragment (never in a request line or a log) to /api/login.
        "/" | "/login" => INDEX,
        "/app.js" => Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("page/app.js"),
        },
        "/style.css" => Asset {
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("page/style.css"),
        },
        "/icon.svg" => Asset {
            content_type: "image/svg+xml",
            body: include_bytes!("page/icon.svg"),
        },
        "/manifest.webmanifest" => Asset {
            content_type: "application/manifest+json",
            body: include_bytes!("page/manifest.webmanifest"),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let index = std::str::from_utf8(find("/").unwrap().body).unwrap();
        for file in [
            "/app.js",
            "/style.css",
            "/icon.svg",
            "/manifest.webmanifest",
        ] {
            assert!(index.contains(&format!("\"{file}\"")), "{file} not linked");
            assert!(find(file).is_some());
        }
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(
            !index.contains("<script>"),
            "no inline script: the CSP forbids it"
        );
        assert!(find("/../etc/passwd").is_none());
    }
}
