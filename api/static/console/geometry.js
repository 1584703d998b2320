// The city plan's geometry: kilometres east/north of the city centre (Leaflet CRS.Simple, no
// tiles, so it works offline). Each district is the part of the city outline nearer to its centre
// than to any other (a Voronoi cell, convex), so every district touches its neighbours.
export const CITY_CENTRE = { lat: 43.85, lon: 77.05 };
const KM_PER_DEG_LAT = 111.2;
const KM_PER_DEG_LON = KM_PER_DEG_LAT * Math.cos((CITY_CENTRE.lat * Math.PI) / 180);

// The same centres as the simulated fleet (simulators/fleet.py).
export const DISTRICTS = {
  gate: { centre: { lat: 43.845, lon: 77.035 }, colour: "#58a6ff" },
  golden: { centre: { lat: 43.8, lon: 77.095 }, colour: "#e3b341" },
  growing: { centre: { lat: 43.78, lon: 76.935 }, colour: "#bc8cff" },
  green: { centre: { lat: 43.925, lon: 77.17 }, colour: "#3fb950" },
};

// The city's outline (convex), [x east km, y north km].
const OUTLINE = [[-18, -15], [-6, -16], [9, -13], [16, -4], [19, 9], [15, 17], [5, 16],
  [-6, 8], [-17, -1]];
// Kapchagay reservoir, north-east of the Green district's shore (drawn for orientation).
export const RESERVOIR = [[16, 17], [20, 9], [26, 11], [33, 16], [35, 24], [27, 27], [19, 24]];
export const RESERVOIR_LABEL = [22, 15];

export function project({ lat, lon }) {
  return [(lon - CITY_CENTRE.lon) * KM_PER_DEG_LON, (lat - CITY_CENTRE.lat) * KM_PER_DEG_LAT];
}

// Keep the points of ``polygon`` on the side of the line where ``inside`` holds (Sutherland-Hodgman).
function clip(polygon, side) {
  const out = [];
  for (let i = 0; i < polygon.length; i++) {
    const a = polygon[i], b = polygon[(i + 1) % polygon.length];
    const sa = side(a), sb = side(b);
    if (sa >= 0) out.push(a);
    if ((sa >= 0) !== (sb >= 0)) {
      const f = sa / (sa - sb);
      out.push([a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])]);
    }
  }
  return out;
}

function cell(name) {
  const own = project(DISTRICTS[name].centre);
  let polygon = OUTLINE;
  for (const [other, district] of Object.entries(DISTRICTS)) {
    if (other === name) continue;
    const them = project(district.centre);
    // Positive where a point is nearer to our centre than to theirs.
    polygon = clip(polygon, (p) =>
      (them[0] - own[0]) * ((own[0] + them[0]) / 2 - p[0]) +
      (them[1] - own[1]) * ((own[1] + them[1]) / 2 - p[1]));
  }
  return polygon;
}

export const AREAS = Object.fromEntries(Object.keys(DISTRICTS).map((name) => [name, cell(name)]));

export function inside(point, polygon) {
  let result = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [xi, yi] = polygon[i], [xj, yj] = polygon[j];
    if ((yi > point[1]) !== (yj > point[1]) &&
        point[0] < ((xj - xi) * (point[1] - yi)) / (yj - yi) + xi) result = !result;
  }
  return result;
}

export function centroid(polygon) {
  const sum = polygon.reduce((acc, [x, y]) => [acc[0] + x, acc[1] + y], [0, 0]);
  return [sum[0] / polygon.length, sum[1] / polygon.length];
}

function hash(text) {
  let value = 2166136261;
  for (const char of text) value = Math.imul(value ^ char.charCodeAt(0), 16777619);
  return (value >>> 0) / 4294967296;
}

/** Where a device is drawn: its own location when that lies in its district's area, otherwise a
 * position inside the area that depends only on its id. ``placed`` says which. */
export function position(device) {
  const area = AREAS[device.district];
  if (device.location) {
    const point = project(device.location);
    if (inside(point, area)) return { point, placed: false };
  }
  const xs = area.map((p) => p[0]), ys = area.map((p) => p[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const middle = centroid(area);
  for (let attempt = 0; attempt < 200; attempt++) {
    const point = [minX + hash(`${device.device_id}/x${attempt}`) * (maxX - minX),
      minY + hash(`${device.device_id}/y${attempt}`) * (maxY - minY)];
    if (inside(point, area)) {
      // Drawn a little towards the middle, clear of the border (the area is convex).
      return { point: [middle[0] + 0.85 * (point[0] - middle[0]),
        middle[1] + 0.85 * (point[1] - middle[1])], placed: true };
    }
  }
  return { point: middle, placed: true };
}

/** Leaflet's [lat, lng] in CRS.Simple for a plan point. */
export const toLatLng = ([x, y]) => [y, x];
