// Swagger UI's start, as a file: the /docs page allows no inline script (Content-Security-Policy).
// persistAuthorization is off: a token typed under Authorize lives in this page only, never in
// localStorage, where it would outlive the tab and be readable by any script on the origin.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
