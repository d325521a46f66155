// Task Service: Swagger UI set-up. Our own file, kept out of index.html so the
// page works under a Content-Security-Policy without inline scripts.
// scripts/vendor-swagger-ui.sh never overwrites it.
"use strict";

window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    // The spec is served by the API itself, on the same origin.
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Keep the bearer token entered with "Authorize" across page reloads.
    persistAuthorization: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    // Never let ?url=... / ?configUrl=... in the address bar load another spec.
    queryConfigEnabled: false,
    // No badge and no request to the public validator: nothing leaves this host.
    validatorUrl: null,
    // BaseLayout has no top bar, so the standalone preset is not needed.
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
