// configurable-http-proxy, answering the jobs service's API clients as the API itself does while
// the service is down (restarting, or killed): a JSON 503 with Retry-After, instead of the hub's
// HTML error page (the proxy's --error-target passes on no header but Content-Type, so the hub
// cannot add Retry-After). Browsers keep the hub's page. The hub starts it so in local mode; the
// proxy image (images/proxy) puts it on the chart's proxy pod.
//
// Usage: node proxy.mjs <configurable-http-proxy's bin script> <API path prefix> [its options...]
// Works with configurable-http-proxy 4 (CommonJS) and 5 (an ES module).
import { realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const bin = realpathSync(process.argv[2]);
const api = process.argv[3];
const RETRY_AFTER_SECONDS = "10"; // as the service's own 503s (jhub_ext/service/handlers.py)

const lib = await import(pathToFileURL(join(dirname(bin), "..", "lib", "configproxy.js")).href);
const ConfigurableProxy = lib.ConfigurableProxy ?? lib.default.ConfigurableProxy ?? lib.default;

const handleProxyError = ConfigurableProxy.prototype.handleProxyError;
ConfigurableProxy.prototype.handleProxyError = function (code, kind, req, res, e) {
  if (code !== 503 || !res || res.headersSent || !req.url.startsWith(api)) {
    return handleProxyError.call(this, code, kind, req, res, e);
  }
  this.metrics.requestsProxyCount.labels(code).inc();
  this.log.error("%s %s %s %s", code, req.method, req.url.split("?")[0], e ? e.message : "");
  const body = JSON.stringify({
    error: "the jobs service is not answering just now; nothing was changed, try again shortly",
    field: null,
  });
  res.writeHead(503, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(body),
    "Retry-After": RETRY_AFTER_SECONDS,
    "Cache-Control": "no-store",
  });
  res.end(body);
};

process.argv.splice(1, 3, bin); // the proxy reads its own command line, as if started directly
await import(pathToFileURL(bin).href);
