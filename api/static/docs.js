// /docs: Swagger UI over the API's own /openapi.json, from the vendored bundle (no CDN, no
// inline script: the page works offline and under a same-origin Content-Security-Policy).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,  // the token pasted under "Authorize" survives a reload
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
