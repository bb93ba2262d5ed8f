// geo standalone scene viewer: Gaussian splats (sorted back to front, alpha-blended)
// plus meshes, point clouds and camera frustums, with orbit controls.
// `THREE` is defined by the bundled three.js just above this code; the scene
// description is the JSON in #geo-scene and the binary arrays are base64 in
// <script id="geo-buf-K"> elements (see scenes/export/html.py for the layout).
//
// URL parameters: ?ui=0 hides the panel; ?hide=/a,/b hides nodes;
// ?view=<JSON {c2w: 16 numbers row-major, OpenCV axes, fx, fy, cx, cy, w, h}>
// fixes the canvas size and camera (used by the browser tests).

const t0 = performance.now();
const params = new URLSearchParams(location.search);
const doc = JSON.parse(document.getElementById('geo-scene').textContent);
const hidden = new Set((params.get('hide') || '').split(',').filter(Boolean));
const fixedView = params.get('view') ? JSON.parse(params.get('view')) : null;
if (params.get('ui') === '0') document.getElementById('geo-panel').style.display = 'none';

function buffer(k) {
  const s = atob(document.getElementById('geo-buf-' + k).textContent.trim());
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out.buffer;
}

const width = fixedView ? fixedView.w : window.innerWidth;
const height = fixedView ? fixedView.h : window.innerHeight;
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true, alpha: false });
renderer.setPixelRatio(fixedView ? 1 : window.devicePixelRatio);
renderer.setSize(width, height);
renderer.setClearColor(new THREE.Color('#' + doc.background), 1);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();

// -- camera: OpenCV pose and pinhole intrinsics -> three.js matrices --------------------
const camera = new THREE.PerspectiveCamera();
camera.matrixAutoUpdate = false;
const view = { c2w: new THREE.Matrix4(), fx: 1, fy: 1, cx: width / 2, cy: height / 2 };
const FLIP = new THREE.Matrix4().makeScale(1, -1, -1);   // OpenCV camera axes -> OpenGL camera axes

function applyView() {
  const n = doc.near, f = doc.far, W = width, H = height;
  camera.projectionMatrix.set(
    2 * view.fx / W, 0, 1 - 2 * view.cx / W, 0,
    0, 2 * view.fy / H, 2 * view.cy / H - 1, 0,
    0, 0, -(f + n) / (f - n), -2 * f * n / (f - n),
    0, 0, -1, 0);
  camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
  camera.matrixWorld.copy(view.c2w).multiply(FLIP);
  camera.matrixWorldInverse.copy(camera.matrixWorld).invert();
  dirty = true;
}

function setView(v) {
  view.c2w.set(...v.c2w);
  if (v.w === width && v.h === height) {
    Object.assign(view, { fx: v.fx, fy: v.fy, cx: v.cx, cy: v.cy });
  } else {  // keep the vertical field of view, centre the principal point
    const s = height / v.h;
    Object.assign(view, { fx: v.fy * s, fy: v.fy * s, cx: width / 2, cy: height / 2 });
  }
  applyView();
}

// -- splats ---------------------------------------------------------------------------
const SPLAT_VS = `
precision highp float; precision highp int; precision highp usampler2D;
uniform highp usampler2D splats;
uniform int texWidth;
uniform vec2 viewport;
uniform mat4 projectionMatrix, modelViewMatrix;
in vec3 position;
in float splatIndex;
out vec4 vColor;
out vec2 vPos;
void main() {
  int i = int(splatIndex) * 2;
  ivec2 p0 = ivec2(i % texWidth, i / texWidth);
  uvec4 a = texelFetch(splats, p0, 0);
  uvec4 b = texelFetch(splats, ivec2(p0.x + 1, p0.y), 0);
  vec4 cam = modelViewMatrix * vec4(uintBitsToFloat(a.xyz), 1.0);
  vec4 clip = projectionMatrix * cam;
  float bound = 1.2 * clip.w;
  if (cam.z > -1e-4 || clip.x < -bound || clip.x > bound || clip.y < -bound || clip.y > bound) {
    gl_Position = vec4(0.0, 0.0, 2.0, 1.0);
    return;
  }
  vec2 s01 = unpackHalf2x16(b.x), s2w = unpackHalf2x16(b.y), qxy = unpackHalf2x16(b.z), qz = unpackHalf2x16(b.w);
  vec3 s = vec3(s01, s2w.x);
  vec4 q = normalize(vec4(s2w.y, qxy, qz.x));  // w x y z
  float w = q.x, x = q.y, y = q.z, z = q.w;
  mat3 R = mat3(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y),
                2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x),
                2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y));
  mat3 M = R * mat3(s.x, 0.0, 0.0, 0.0, s.y, 0.0, 0.0, 0.0, s.z);
  float d = -cam.z;
  float fx = projectionMatrix[0][0] * viewport.x * 0.5, fy = projectionMatrix[1][1] * viewport.y * 0.5;
  // EWA splatting (Zwicker et al. 2002): Jacobian of the perspective projection at the centre
  mat3 J = mat3(fx / d, 0.0, 0.0, 0.0, fy / d, 0.0, fx * cam.x / (d * d), fy * cam.y / (d * d), 0.0);
  mat3 T = J * mat3(modelViewMatrix) * M;
  mat3 cov = T * transpose(T);
  float ca = cov[0][0] + 0.3, cb = cov[0][1], cd = cov[1][1] + 0.3;  // + 0.3 px^2 low-pass, as gsplat's eps2d
  float mid = 0.5 * (ca + cd), rad = length(vec2(0.5 * (ca - cd), cb));
  float l1 = mid + rad, l2 = max(mid - rad, 0.01);
  vec2 v1 = abs(cb) > 1e-9 ? normalize(vec2(cb, l1 - ca)) : (ca >= cd ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 major = min(3.0 * sqrt(l1), 2048.0) * v1;
  vec2 minor = min(3.0 * sqrt(l2), 2048.0) * vec2(-v1.y, v1.x);  // counter-clockwise quads
  vPos = 3.0 * position.xy;
  vec2 ndc = clip.xy / clip.w + (position.x * major + position.y * minor) * 2.0 / viewport;
  gl_Position = vec4(ndc, clip.z / clip.w, 1.0);
  uint c = a.w;
  vColor = vec4(float(c & 255u), float((c >> 8) & 255u), float((c >> 16) & 255u), float(c >> 24)) / 255.0;
}`;

const SPLAT_FS = `
precision highp float;
in vec4 vColor;
in vec2 vPos;
out vec4 fragColor;
void main() {
  float r2 = dot(vPos, vPos);
  if (r2 > 9.0) discard;
  float alpha = min(0.99, vColor.a * exp(-0.5 * r2));
  if (alpha < 1.0 / 255.0) discard;
  fragColor = vec4(vColor.rgb * alpha, alpha);  // premultiplied, composited back to front
}`;

class Splats {
  constructor(entry) {
    const n = entry.count;
    this.n = n;
    const raw = new Uint32Array(buffer(entry.buffer));
    this.centres = new Float32Array(raw.buffer);  // stride 8 words, x y z at 0..2
    const texWidth = 2048, rows = Math.ceil((2 * n) / texWidth);
    const texData = new Uint32Array(texWidth * rows * 4);
    texData.set(raw);
    const tex = new THREE.DataTexture(texData, texWidth, rows, THREE.RGBAIntegerFormat, THREE.UnsignedIntType);
    tex.internalFormat = 'RGBA32UI';
    tex.needsUpdate = true;
    const geo = new THREE.InstancedBufferGeometry();
    geo.setAttribute('position', new THREE.BufferAttribute(new Float32Array([-1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 1, 0]), 3));
    geo.setIndex([0, 1, 2, 0, 2, 3]);
    this.order = new Float32Array(n);
    this.indexAttr = new THREE.InstancedBufferAttribute(this.order, 1);
    this.indexAttr.setUsage(THREE.DynamicDrawUsage);
    geo.setAttribute('splatIndex', this.indexAttr);
    geo.instanceCount = n;
    const mat = new THREE.RawShaderMaterial({
      glslVersion: THREE.GLSL3, vertexShader: SPLAT_VS, fragmentShader: SPLAT_FS,
      uniforms: { splats: { value: tex }, texWidth: { value: texWidth }, viewport: { value: new THREE.Vector2(width, height) } },
      transparent: true, depthWrite: false, depthTest: true, side: THREE.DoubleSide,
      blending: THREE.CustomBlending, blendEquation: THREE.AddEquation,
      blendSrc: THREE.OneFactor, blendDst: THREE.OneMinusSrcAlphaFactor,
      blendSrcAlpha: THREE.OneFactor, blendDstAlpha: THREE.OneMinusSrcAlphaFactor,
    });
    this.object = new THREE.Mesh(geo, mat);
    this.object.frustumCulled = false;
    this.object.renderOrder = 10;  // after the opaque meshes
    this.depth = new Float32Array(n);
    this.keys = new Uint32Array(n);
    this.counts = new Uint32Array(65536);
  }

  // Counting sort on 16-bit quantised view depth, farthest first.
  sort(viewMatrix) {
    const e = viewMatrix.elements, c = this.centres, n = this.n, depth = this.depth;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const z = e[2] * c[8 * i] + e[6] * c[8 * i + 1] + e[10] * c[8 * i + 2] + e[14];
      depth[i] = z;
      if (z < lo) lo = z;
      if (z > hi) hi = z;
    }
    const scale = hi > lo ? 65535 / (hi - lo) : 0, counts = this.counts, keys = this.keys;
    counts.fill(0);
    for (let i = 0; i < n; i++) { const k = ((depth[i] - lo) * scale) | 0; keys[i] = k; counts[k]++; }
    for (let k = 1; k < 65536; k++) counts[k] += counts[k - 1];
    for (let i = n - 1; i >= 0; i--) this.order[--counts[keys[i]]] = i;  // ascending z: far (most negative) first
    this.indexAttr.needsUpdate = true;
  }
}

// -- meshes, points, frustums ---------------------------------------------------------
const pending = [];
const objects = [];   // {path, object}
const splatSets = [];

function srgbToLinear(c) { return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }

function addMesh(entry) {
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.BufferAttribute(new Float32Array(buffer(entry.positions)), 3));
  g.setIndex(new THREE.BufferAttribute(new Uint32Array(buffer(entry.indices)), 1));
  const opts = { side: THREE.DoubleSide };
  if (entry.uv !== undefined) g.setAttribute('uv', new THREE.BufferAttribute(new Float32Array(buffer(entry.uv)), 2));
  if (entry.colors !== undefined) {
    const u8 = new Uint8Array(buffer(entry.colors)), lin = new Float32Array(u8.length);
    for (let i = 0; i < u8.length; i++) lin[i] = srgbToLinear(u8[i] / 255);
    g.setAttribute('color', new THREE.BufferAttribute(lin, entry.color_channels));
    opts.vertexColors = true;
  } else if (entry.texture === undefined) {
    opts.color = 0xb0b0b0;
  }
  const mat = new THREE.MeshBasicMaterial(opts);
  if (entry.texture !== undefined) {
    const img = new Image();
    pending.push(new Promise((resolve, reject) => {
      img.onload = () => {
        const tex = new THREE.Texture(img);
        tex.colorSpace = THREE.SRGBColorSpace;
        tex.needsUpdate = true;
        mat.map = tex;
        mat.needsUpdate = true;
        resolve();
      };
      img.onerror = () => reject(new Error('texture of ' + entry.path + ' failed to decode'));
    }));
    img.src = 'data:image/png;base64,' + document.getElementById('geo-buf-' + entry.texture).textContent.trim();
  }
  const m = new THREE.Mesh(g, mat);
  m.matrixAutoUpdate = false;
  m.matrix.set(...entry.matrix);
  return m;
}

function addPoints(entry) {
  const g = new THREE.BufferGeometry();
  g.setAttribute('position', new THREE.BufferAttribute(new Float32Array(buffer(entry.positions)), 3));
  const opts = { size: 2, sizeAttenuation: false };
  if (entry.colors !== undefined) {
    const u8 = new Uint8Array(buffer(entry.colors)), lin = new Float32Array(u8.length);
    for (let i = 0; i < u8.length; i++) lin[i] = srgbToLinear(u8[i] / 255);
    g.setAttribute('color', new THREE.BufferAttribute(lin, 3));
    opts.vertexColors = true;
  } else {
    opts.color = 0x404040;
  }
  const p = new THREE.Points(g, new THREE.PointsMaterial(opts));
  p.matrixAutoUpdate = false;
  p.matrix.set(...entry.matrix);
  return p;
}

function addFrustum(entry, size) {
  const v = entry.view, d = size;
  const corners = [[0, 0], [v.w, 0], [v.w, v.h], [0, v.h]].map(([u, w]) =>
    new THREE.Vector3((u - v.cx) / v.fx * d, (w - v.cy) / v.fy * d, d));
  const o = new THREE.Vector3();
  const pts = [];
  for (let i = 0; i < 4; i++) pts.push(o, corners[i], corners[i], corners[(i + 1) % 4]);
  const g = new THREE.BufferGeometry().setFromPoints(pts);
  const l = new THREE.LineSegments(g, new THREE.LineBasicMaterial({ color: 0x3060c0 }));
  l.matrixAutoUpdate = false;
  l.matrix.set(...v.c2w);
  return l;
}

const size = doc.extent > 0 ? doc.extent : 1;
for (const entry of doc.objects) {
  let obj;
  if (entry.kind === 'splats') { const s = new Splats(entry); splatSets.push(s); obj = s.object; }
  else if (entry.kind === 'mesh') obj = addMesh(entry);
  else if (entry.kind === 'points') obj = addPoints(entry);
  else if (entry.kind === 'camera') obj = addFrustum(entry, 0.05 * size);
  else continue;
  obj.visible = !hidden.has(entry.path);
  scene.add(obj);
  objects.push({ path: entry.path, kind: entry.kind, object: obj });
}

// node list with visibility toggles
const list = document.getElementById('geo-nodes');
for (const o of objects) {
  const label = document.createElement('label');
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.checked = o.object.visible;
  box.onchange = () => { o.object.visible = box.checked; dirty = true; };
  label.append(box, ' ' + o.path + ' (' + o.kind + ')');
  list.appendChild(label);
}

// -- orbit controls ---------------------------------------------------------------------
const target = new THREE.Vector3(...doc.center);
const up = new THREE.Vector3(...doc.up);
let dirty = true;

function orbit(dx, dy) {
  const pos = new THREE.Vector3().setFromMatrixPosition(view.c2w);
  const right = new THREE.Vector3().setFromMatrixColumn(view.c2w, 0);
  const q = new THREE.Quaternion().setFromAxisAngle(up, -dx * 0.005)
    .multiply(new THREE.Quaternion().setFromAxisAngle(right, dy * 0.005));
  const R = new THREE.Matrix4().makeRotationFromQuaternion(q);
  pos.sub(target).applyQuaternion(q).add(target);
  view.c2w.premultiply(R).setPosition(pos);
  applyView();
}

function pan(dx, dy) {
  const pos = new THREE.Vector3().setFromMatrixPosition(view.c2w);
  const dist = pos.distanceTo(target);
  const right = new THREE.Vector3().setFromMatrixColumn(view.c2w, 0);
  const down = new THREE.Vector3().setFromMatrixColumn(view.c2w, 1);
  const shift = right.multiplyScalar(-dx * dist / view.fx).add(down.multiplyScalar(-dy * dist / view.fy));
  target.add(shift);
  view.c2w.setPosition(pos.add(shift));
  applyView();
}

function zoom(factor) {
  const pos = new THREE.Vector3().setFromMatrixPosition(view.c2w);
  view.c2w.setPosition(pos.sub(target).multiplyScalar(factor).add(target));
  applyView();
}

const canvas = renderer.domElement;
let drag = null;
canvas.addEventListener('contextmenu', (e) => e.preventDefault());
canvas.addEventListener('pointerdown', (e) => { drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey }; canvas.setPointerCapture(e.pointerId); });
canvas.addEventListener('pointerup', () => { drag = null; });
canvas.addEventListener('pointermove', (e) => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  drag.x = e.clientX; drag.y = e.clientY;
  if (drag.pan) pan(dx, dy); else orbit(dx, dy);
});
canvas.addEventListener('wheel', (e) => { e.preventDefault(); zoom(Math.exp(e.deltaY * 0.001)); }, { passive: false });
window.addEventListener('keydown', (e) => {
  const k = parseInt(e.key, 10);
  if (k >= 1 && k <= doc.views.length) setView(doc.views[k - 1]);
});

setView(fixedView || doc.views[0]);

// -- render loop ------------------------------------------------------------------------
function frame() {
  if (dirty) {
    for (const s of splatSets) s.sort(camera.matrixWorldInverse);
    renderer.render(scene, camera);
    dirty = false;
  }
  requestAnimationFrame(frame);
}

Promise.all(pending).then(() => {
  dirty = true;
  frame();
  requestAnimationFrame(() => {
    window.__geo = { ready: true, loadMs: performance.now() - t0, splats: splatSets.reduce((a, s) => a + s.n, 0),
      drawCalls: renderer.info.render.calls, triangles: renderer.info.render.triangles, programs: renderer.info.programs.length };
    console.log('geo viewer ready in ' + window.__geo.loadMs.toFixed(0) + ' ms, ' + window.__geo.splats + ' splats');
  });
}, (err) => { console.error(err); window.__geo = { ready: false, error: String(err) }; });
