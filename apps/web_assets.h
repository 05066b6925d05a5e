// The files of the `inkgrad serve` page (apps/web/), embedded in the binary at build time by
// apps/embed_web.cmake, so the server never reads a file and the page needs no network.
#pragma once

#include <span>
#include <string_view>

namespace ink::app {

struct WebAsset {
  const char* path;          // "/index.html", "/app.js", "/style.css"
  const char* content_type;  // "text/html; charset=utf-8", ...
  std::string_view bytes;
};

std::span<const WebAsset> web_assets();

}  // namespace ink::app
