// Copies the dashboard's libraries from node_modules into api/static/vendor/ (git-ignored),
// the folder the API serves at /static/vendor/. Run by `npm run build` (scripts/provision.sh).
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
};

rmSync(target, { recursive: true, force: true });
for (const [from, to] of Object.entries(files)) {
  const destination = join(target, to);
  mkdirSync(dirname(destination), { recursive: true });
  cpSync(join(here, "node_modules", from), destination, { recursive: true });
}
console.log(`vendor libraries copied to ${target}`);
