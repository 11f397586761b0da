// The bratseg result viewer: NiiVue (vendored, static/niivue/) showing one scan with the
// predicted label map as a colour-coded overlay and, optionally, the uncertainty map.
//
// The page's manifest (a JSON script element written by the server) lists the result's
// files. window.bratsegViewer reports what the viewer has done, for users' scripts and the
// browser tests: {loaded, error, volumes, labelCounts, sequence, layout, opacity, regions,
// uncertainty, uncertaintyShown, renderer, readout, locationEvents, timings, rano}.
//
// The RANO measurements (manifest.rano, measured on the label map) are listed beside the view,
// and the two diameters of each target lesion are NiiVue measurement lines on its axial slice:
// NiiVue draws them whenever that slice is shown, with their lengths.
(function () {
  "use strict";

  const state = {
    loaded: false,
    error: null,
    volumes: [],
    labelCounts: {},
    sequence: null,
    layout: null,
    opacity: 0.6,
    regions: {},
    uncertainty: false,
    uncertaintyShown: false,
    renderer: null,
    readout: null,
    locationEvents: 0,
    timings: { start: performance.now() },
    rano: null, // {spd, targets, lines: [{lesion, kind, startMM, endMM, middle, slicePosition}], shownTarget}
  };
  window.bratsegViewer = state;

  const UNCERTAINTY_OPACITY = 0.8;
  const LABELS_NAME = "labels.nii.gz";
  const LOW_CONFIDENCE = "low confidence: review carefully";
  const manifest = JSON.parse(document.getElementById("bratseg-manifest").textContent);
  const $ = (id) => document.getElementById(id);
  const statusLine = $("status");

  function fail(message) {
    state.error = message;
    statusLine.textContent = message;
    statusLine.className = "error";
  }

  if (typeof niivue === "undefined") {
    fail("The viewer's script (NiiVue) did not load; the files can still be downloaded.");
    return;
  }
  const NV = niivue;
  const LAYOUTS = {
    axial: [NV.SLICE_TYPE.AXIAL, NV.SHOW_RENDER.NEVER],
    coronal: [NV.SLICE_TYPE.CORONAL, NV.SHOW_RENDER.NEVER],
    sagittal: [NV.SLICE_TYPE.SAGITTAL, NV.SHOW_RENDER.NEVER],
    multiplanar: [NV.SLICE_TYPE.MULTIPLANAR, NV.SHOW_RENDER.NEVER],
    multiplanar3d: [NV.SLICE_TYPE.MULTIPLANAR, NV.SHOW_RENDER.ALWAYS],
    render: [NV.SLICE_TYPE.RENDER, NV.SHOW_RENDER.NEVER],
  };
  const rano = manifest.rano || null;
  const targets = rano ? rano.lesions.filter((lesion) => lesion.target) : [];
  const labelNames = { 0: "background" };
  for (const label of manifest.labels) {
    labelNames[label.value] = label.name;
    state.regions[label.value] = true;
  }

  // ----------------------------------------------------------------- page text and links

  function describe() {
    const conf = manifest.confidence;
    const box = $("confidence");
    if (conf) {
      box.innerHTML = "";
      const score = document.createElement("span");
      score.textContent = `Confidence ${conf.score.toFixed(2)}`;
      box.appendChild(score);
      if (conf.low) {
        const flag = document.createElement("span");
        flag.className = "low";
        flag.textContent = ` · ${LOW_CONFIDENCE}`;
        box.appendChild(flag);
      }
    } else {
      box.textContent = "No confidence score for this result.";
    }
    if (manifest.time_point && manifest.followup) {
      // one time point of a follow-up comparison
      const line = $("time-point");
      const flag = manifest.followup.flagged ? " · flagged: review carefully" : "";
      line.textContent =
        `${manifest.time_point} scan of a follow-up comparison · RANO category (imaging only): ` +
        `${manifest.followup.response}${flag}`;
      line.hidden = false;
    }
    const list = $("warnings");
    for (const warning of manifest.warnings || []) {
      if (warning === LOW_CONFIDENCE) continue; // already beside the score
      const item = document.createElement("li");
      item.textContent = warning;
      list.appendChild(item);
    }
    const links = { "labels-link": manifest.labels_url, "uncertainty-link": manifest.uncertainty_url, "report-link": manifest.report_url };
    for (const [id, url] of Object.entries(links)) {
      if (url) $(id).href = url;
      else $(id).hidden = true;
    }
  }

  function describeRano() {
    const box = $("rano-box");
    if (!rano) {
      box.hidden = true;
      return;
    }
    state.rano = { spd: rano.spd_mm2, targets: targets.length, lines: [], shownTarget: null };
    const plural = targets.length === 1 ? "" : "s";
    $("rano-spd").textContent = `SPD ${rano.spd_mm2.toFixed(1)} mm² over ${targets.length} target lesion${plural}`;
    const list = $("rano-targets");
    if (!targets.length) {
      const none = document.createElement("p");
      none.className = "note";
      none.textContent = rano.lesions.length ? "No measurable enhancing lesion." : "No enhancing lesion.";
      list.appendChild(none);
    }
    targets.forEach((lesion, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.id = `rano-target-${i + 1}`;
      button.textContent =
        `Target ${i + 1}: ${lesion.longest_mm.toFixed(1)} × ${lesion.perpendicular_mm.toFixed(1)} mm ` +
        `= ${lesion.product_mm2.toFixed(0)} mm², slice ${lesion.slice}`;
      button.addEventListener("click", () => showTarget(i));
      list.appendChild(button);
    });
  }

  function buildControls() {
    const select = $("sequence");
    for (const [key, scan] of Object.entries(manifest.scans)) {
      const option = document.createElement("option");
      option.value = key;
      option.textContent = scan.name;
      select.appendChild(option);
    }
    state.sequence = "flair" in manifest.scans ? "flair" : Object.keys(manifest.scans)[0];
    select.value = state.sequence;
    select.addEventListener("change", () => switchSequence(select.value));

    const regions = $("regions");
    for (const label of manifest.labels) {
      const row = document.createElement("label");
      row.className = "toggle";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.id = `region-${label.value}`;
      box.dataset.label = String(label.value);
      box.addEventListener("change", () => {
        state.regions[label.value] = box.checked;
        applyLabelColours();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${label.rgb.join(",")})`;
      row.append(box, swatch, document.createTextNode(`${label.value} ${label.name}`));
      regions.appendChild(row);
    }

    const opacity = $("opacity");
    const shown = $("opacity-value");
    opacity.value = String(state.opacity);
    shown.textContent = state.opacity.toFixed(2);
    opacity.addEventListener("input", () => {
      state.opacity = Number(opacity.value);
      shown.textContent = state.opacity.toFixed(2);
      if (state.loaded) nv.setOpacity(1, state.opacity);
    });

    const uncertainty = $("uncertainty");
    if (!manifest.uncertainty_url) {
      uncertainty.disabled = true;
      $("uncertainty-box").title = "This result has no uncertainty map.";
    }
    uncertainty.addEventListener("change", () => showUncertainty(uncertainty.checked));

    for (const button of document.querySelectorAll("#layouts button")) {
      button.addEventListener("click", () => setLayout(button.dataset.layout));
    }
  }

  // ------------------------------------------------------------------------------ NiiVue

  const nv = new NV.Niivue({
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.2, 0.8, 1, 1],
    show3Dcrosshair: true,
    isRadiologicalConvention: true, // patient's right on the left, as the result page's pictures
    isOrientationTextVisible: true,
    dragAndDropEnabled: false,
    isColorbar: false,
    logLevel: "warn",
    // RANO diameters in magenta: apart from every label colour and the crosshair
    measureLineColor: [1, 0.25, 0.95, 1],
    measureTextColor: [1, 0.25, 0.95, 1],
    rulerColor: [1, 0.25, 0.95, 0.9],
    rulerWidth: 3,
  });

  function labelColormap() {
    // Labels 0..4 (3 is unused in BraTS 2017-2020); hidden regions get alpha 0.
    const cmap = { R: [0, 0, 0, 0, 0], G: [0, 0, 0, 0, 0], B: [0, 0, 0, 0, 0], A: [0, 0, 0, 0, 0], I: [0, 1, 2, 3, 4] };
    cmap.labels = ["background", "", "", "", ""];
    for (const label of manifest.labels) {
      [cmap.R[label.value], cmap.G[label.value], cmap.B[label.value]] = label.rgb;
      cmap.A[label.value] = state.regions[label.value] ? 255 : 0;
      cmap.labels[label.value] = label.name;
    }
    return cmap;
  }

  function applyLabelColours() {
    if (!state.loaded) return;
    nv.volumes[1].setColormapLabel(labelColormap());
    nv.updateGLVolume();
  }

  function countLabels(volume) {
    const counts = {};
    for (const label of manifest.labels) counts[label.value] = 0;
    const data = volume.img;
    let sx = 0, sy = 0, sz = 0, n = 0;
    const [nx, ny] = [volume.hdr.dims[1], volume.hdr.dims[2]];
    for (let i = 0; i < data.length; i++) {
      const value = data[i];
      if (value === 0) continue;
      if (value in counts) counts[value] += 1;
      sx += i % nx;
      sy += Math.floor(i / nx) % ny;
      sz += Math.floor(i / (nx * ny));
      n += 1;
    }
    return { counts, centre: n ? [sx / n, sy / n, sz / n].map(Math.round) : null };
  }

  function det3(q) {
    return (
      q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1]) -
      q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0]) +
      q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0])
    );
  }

  function mmToVoxel(volume, mm) {
    // The file's own voxel indices (as nibabel's data[x, y, z]) of a world position, by
    // Cramer's rule on its affine: NiiVue's own voxel coordinates are those of the volume
    // reordered to RAS.
    const a = volume.hdr.affine;
    const m = [0, 1, 2].map((r) => [a[r][0], a[r][1], a[r][2]]);
    const d = [0, 1, 2].map((r) => mm[r] - a[r][3]);
    const det = det3(m);
    const withColumn = (c) => m.map((row, r) => row.map((v, k) => (k === c ? d[r] : v)));
    return [0, 1, 2].map((c) => Math.round(det3(withColumn(c)) / det));
  }

  function voxelToMM(volume, vox) {
    // The file's own voxel indices through its affine (NiiVue's fractions are RAS-ordered).
    const a = volume.hdr.affine;
    return [0, 1, 2].map((r) => a[r][0] * vox[0] + a[r][1] * vox[1] + a[r][2] * vox[2] + a[r][3]);
  }

  function setLayout(name) {
    const [sliceType, showRender] = LAYOUTS[name];
    nv.opts.multiplanarShowRender = showRender;
    nv.setSliceType(sliceType);
    state.layout = name;
    for (const button of document.querySelectorAll("#layouts button")) {
      button.setAttribute("aria-pressed", String(button.dataset.layout === name));
    }
  }

  function format(value) {
    if (value === undefined || value === null || Number.isNaN(value)) return "-";
    return Number.isInteger(value) ? String(value) : value.toFixed(3);
  }

  function onLocation(location) {
    const values = location.values || [];
    const scan = values[0];
    const labels = values[1];
    const uncertainty = values[2];
    const vox = mmToVoxel(nv.volumes[0], location.mm);
    const label = labels ? Math.round(labels.value) : 0;
    state.readout = {
      vox,
      mm: Array.from(location.mm).slice(0, 3),
      intensity: scan ? scan.value : null,
      label,
      labelName: labelNames[label] || `label ${label}`,
      uncertainty: uncertainty ? uncertainty.value : null,
    };
    state.locationEvents += 1;
    const parts = [
      `voxel (${vox.join(", ")})`,
      `${manifest.scans[state.sequence].name} ${format(state.readout.intensity)}`,
      `label ${label}: ${state.readout.labelName}`,
    ];
    if (uncertainty) parts.push(`uncertainty ${format(uncertainty.value)} bit`);
    $("readout").textContent = parts.join(" · ");
  }

  function uncertaintyVolume() {
    return {
      url: manifest.uncertainty_url,
      name: "uncertainty.nii.gz",
      colormap: "hot",
      cal_min: 0.05, // below: sure, transparent
      cal_max: 1,
      opacity: UNCERTAINTY_OPACITY,
    };
  }

  function addDiameterLines() {
    // Each diameter as a completed NiiVue measurement on the axial slice through its middle:
    // NiiVue draws it, with its length, whenever the crosshair is on that slice.
    if (!state.rano) return;
    const labels = nv.volumes[1];
    const lines = [];
    targets.forEach((lesion, i) => {
      for (const kind of ["longest", "perpendicular"]) {
        const startMM = voxelToMM(labels, lesion[kind].start);
        const endMM = voxelToMM(labels, lesion[kind].end);
        const middle = startMM.map((v, r) => (v + endMM[r]) / 2);
        const slicePosition = nv.mm2frac(middle)[2];
        lines.push({ lesion: i + 1, kind, startMM, endMM, slicePosition, middle });
      }
    });
    nv.document.completedMeasurements = lines.map((line) => ({
      startMM: line.startMM,
      endMM: line.endMM,
      sliceIndex: 0,
      sliceType: NV.SLICE_TYPE.AXIAL,
      slicePosition: line.slicePosition,
      distance: Math.hypot(...line.startMM.map((v, r) => v - line.endMM[r])),
    }));
    state.rano.lines = lines;
  }

  function targetPosition(i) {
    // The middle of the target's longest diameter: on the slice its lines are drawn on.
    const line = state.rano.lines.find((l) => l.lesion === i + 1 && l.kind === "longest");
    const frac = nv.mm2frac(line.middle);
    frac[2] = line.slicePosition;
    return frac;
  }

  function showTarget(i) {
    if (!state.loaded || !state.rano || !state.rano.lines.length) return;
    if (state.layout === "render") setLayout("multiplanar");
    nv.scene.crosshairPos = targetPosition(i);
    state.rano.shownTarget = i + 1;
    nv.drawScene();
    nv.createOnLocationChange();
  }

  function listVolumes() {
    state.volumes = nv.volumes.map((v) => ({ name: v.name, dims: Array.from(v.hdr.dims.slice(1, 4)) }));
  }

  async function loadScene() {
    const volumes = [
      { url: manifest.scans[state.sequence].url, name: `${state.sequence}.nii.gz`, colormap: "gray" },
      { url: manifest.labels_file_url, name: LABELS_NAME, opacity: state.opacity },
    ];
    // Each overlay is resliced on the GPU when loaded: the uncertainty map only once asked for.
    if (state.uncertainty) volumes.push(uncertaintyVolume());
    await nv.loadVolumes(volumes);
    listVolumes();
  }

  async function showUncertainty(show) {
    state.uncertainty = show;
    if (!state.loaded) return;
    if (nv.volumes.length > 2) {
      nv.setOpacity(2, show ? UNCERTAINTY_OPACITY : 0);
    } else if (show) {
      statusLine.textContent = "Loading the uncertainty map...";
      try {
        await nv.addVolumeFromUrl(uncertaintyVolume());
        listVolumes();
        statusLine.textContent = "";
      } catch (error) {
        fail(`Could not load the uncertainty map: ${error}`);
      }
    }
    state.uncertaintyShown = show && nv.volumes.length > 2;
  }

  function rendererName() {
    const gl = nv.gl;
    const info = gl && gl.getExtension("WEBGL_debug_renderer_info");
    return info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
  }

  async function switchSequence(sequence) {
    const position = nv.scene.crosshairPos.slice();
    state.loaded = false;
    state.sequence = sequence;
    statusLine.textContent = `Loading ${manifest.scans[sequence].name}...`;
    try {
      await loadScene();
      nv.scene.crosshairPos = position;
      state.loaded = true;
      nv.drawScene();
      statusLine.textContent = "";
    } catch (error) {
      fail(`Could not load the ${manifest.scans[sequence].name} scan: ${error}`);
    }
  }

  async function start() {
    describe();
    describeRano();
    if (!Object.keys(manifest.scans).length) {
      fail("This result keeps no scan to show; download the label map instead.");
      return;
    }
    buildControls();
    try {
      await nv.attachToCanvas($("gl"));
      state.timings.attached = performance.now();
    } catch (error) {
      fail(`This browser cannot draw the viewer (WebGL2 is needed): ${error}`);
      return;
    }
    nv.onLocationChange = onLocation;
    // Colour the label map as it arrives, before NiiVue first draws it: every later update
    // redraws all layers, which takes seconds without a GPU.
    nv.onVolumeAddedFromUrl = (_options, volume) => {
      if (volume.name === LABELS_NAME) volume.colormapLabel = NV.cmapper.makeLabelLut(labelColormap());
    };
    // Ray-casting the 3-D view on a CPU (no GPU: SwiftShader, llvmpipe) takes seconds a
    // frame: open on the planes there, and leave 3-D a click away. Set before loading, so
    // that loading does not draw the 3-D view either.
    state.renderer = rendererName();
    setLayout(/swiftshader|llvmpipe|software/i.test(state.renderer) ? "multiplanar" : "multiplanar3d");
    try {
      await loadScene();
    } catch (error) {
      fail(`Could not load the result's images: ${error}`);
      return;
    }
    state.timings.loaded = performance.now();
    const { counts, centre } = countLabels(nv.volumes[1]);
    state.labelCounts = counts;
    state.timings.counted = performance.now();
    if (centre) nv.scene.crosshairPos = nv.mm2frac(voxelToMM(nv.volumes[1], centre)); // open on the tumour
    addDiameterLines();
    if (targets.length) {
      // open on the first target lesion, its diameters drawn on the axial plane
      nv.scene.crosshairPos = targetPosition(0);
      state.rano.shownTarget = 1;
    }
    state.loaded = true;
    nv.drawScene();
    state.timings.drawn = performance.now();
    statusLine.textContent = "";
  }

  start().catch((error) => fail(`The viewer failed: ${error}`));
})();
