// Copies the console's libraries (Leaflet, uPlot) and Swagger UI (so /docs works offline) from
// node_modules into api/static/vendor/ (git-ignored), the folder the API serves at
// /static/vendor/. Run by `npm run build` (scripts/provision.sh).
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "api", "static", "vendor");
const files = {
  "leaflet/dist/leaflet.js": "leaflet/leaflet.js",
  "leaflet/dist/leaflet.css": "leaflet/leaflet.css",
  "leaflet/dist/images": "leaflet/images",
  "leaflet/LICENSE": "leaflet/LICENSE",
  "uplot/dist/uPlot.iife.min.js": "uplot/uPlot.iife.min.js",
  "uplot/dist/uPlot.min.css": "uplot/uPlot.min.css",
  "uplot/LICENSE": "uplot/LICENSE",
  "swagger-ui-dist/swagger-ui-bundle.js": "swagger-ui/swagger-ui-bundle.js",
  "swagger-ui-dist/swagger-ui.css": "swagger-ui/swagger-ui.css",
  "swagger-ui-dist/favicon-32x32.png": "swagger-ui/favicon-32x32.png",
  "swagger-ui-dist/oauth2-redirect.html": "swagger-ui/oauth2-redirect.html",
  "swagger-ui-dist/LICENSE": "swagger-ui/LICENSE",
  "swagger-ui-dist/NOTICE": "swagger-ui/NOTICE",
};

rmSync(target, { recursive: true, force: true });
for (const [from, to] of Object.entries(files)) {
  const destination = join(target, to);
  mkdirSync(dirname(destination), { recursive: true });
  cpSync(join(here, "node_modules", from), destination, { recursive: true });
}
console.log(`vendor libraries copied to ${target}`);
