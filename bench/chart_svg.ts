// A hand-written SVG line chart: one line per series over shared x values. The x axis is
// categorical (equal spacing) because the sweeps are geometric (1, 8, 32, 128...): a linear
// axis would crush the small values into one corner.

export interface Series {
  name: string;
  color?: number; // palette index (default: the series index): same color = same family
  dash?: boolean; // dashed line, to tell apart series of one color
  points: { x: number; y: number }[]; // y NaN = missing (e.g. did not fit)
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const W = 720;
const H = 440;
const M = { left: 80, right: 150, top: 50, bottom: 60 };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A "nice" upper bound (1, 2, 2.5, 5 x 10^k) at or above v, for the y axis. */
function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmtTick(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

export function renderLineChart(spec: ChartSpec): string {
  const xs = [...new Set(spec.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) =>
    a - b
  );
  const ys = spec.series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const yMax = niceCeil(Math.max(0, ...ys));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const px = (x: number) =>
    M.left + (xs.length < 2 ? pw / 2 : (xs.indexOf(x) / (xs.length - 1)) * pw);
  const py = (y: number) => M.top + ph - (y / yMax) * ph;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${esc(spec.title)}</text>`,
  );
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    const y = py(v);
    out.push(
      `<line x1="${M.left}" x2="${M.left + pw}" y1="${y}" y2="${y}" stroke="#ddd"/>`,
      `<text x="${M.left - 8}" y="${y + 4}" text-anchor="end">${fmtTick(v)}</text>`,
    );
  }
  for (const x of xs) {
    out.push(
      `<line x1="${px(x)}" x2="${px(x)}" y1="${M.top + ph}" y2="${M.top + ph + 5}" stroke="#333"/>`,
      `<text x="${px(x)}" y="${M.top + ph + 20}" text-anchor="middle">${fmtTick(x)}</text>`,
    );
  }
  out.push(
    `<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${
      M.top + ph
    }" stroke="#333"/>`,
    `<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="#333"/>`,
    `<text x="${M.left + pw / 2}" y="${H - 15}" text-anchor="middle">${esc(spec.xLabel)}</text>`,
    `<text transform="translate(20 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">` +
      `${esc(spec.yLabel)}</text>`,
  );
  spec.series.forEach((s, i) => {
    const color = COLORS[(s.color ?? i) % COLORS.length];
    const dash = s.dash ? ` stroke-dasharray="6 4"` : "";
    const pts = s.points.filter((p) => Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts.map((p, j) => `${j ? "L" : "M"}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`);
      out.push(`<path d="${d.join(" ")}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    }
    for (const p of pts) {
      out.push(
        `<circle cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="3.5" fill="${color}">` +
          `<title>${esc(s.name)}: ${fmtTick(p.y)}</title></circle>`,
      );
    }
    const ly = M.top + 10 + i * 20;
    out.push(
      `<line x1="${M.left + pw + 15}" x2="${M.left + pw + 40}" y1="${ly}" y2="${ly}" ` +
        `stroke="${color}" stroke-width="2"${dash}/>`,
      `<text x="${M.left + pw + 46}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
