# syntax=docker/dockerfile:1
# demist: DEMIST qMT pool-size-ratio (PSR) synthesis from T1w + FLAIR, as a BIDS-App.
#
#   docker build -t demist:0.1.0 .
#   docker run --rm --gpus all --read-only --tmpfs /tmp -u "$(id -u):$(id -g)" \
#       -v /path/bids:/data:ro -v /path/derivatives/demist:/out -v /path/work:/work \
#       demist:0.1.0 /data /out participant -w /work
#
# docs/containers.md explains every option; tests/containers/ replays the install
# steps of this file (the RUN lines that mention ${WHEELS}) in a fresh virtual
# environment, so edit them with care.

ARG PYTHON_VERSION=3.12
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# 1. The demist wheel, built from the sources alone.
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY demist_bids ./demist_bids
ARG WHEELS=/wheels
RUN pip wheel --no-cache-dir --no-deps --wheel-dir "${WHEELS}" .

# ---------------------------------------------------------------------------
# 2. CUDA-capable PyTorch on Python 3.12. The Linux torch wheels on PyPI carry
#    their own CUDA runtime, cuDNN and NCCL; the host only provides the driver
#    (docker --gpus, apptainer --nv). TORCH_INDEX_URL picks another build, e.g.
#    https://download.pytorch.org/whl/cu126 or .../whl/cpu for a small CPU image.
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS torch
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# ---------------------------------------------------------------------------
# 3. Optional weights baked into the image: an archive (.zip, .tar.gz) or a
#    single file, e.g. the MONAI brats_mri_generative_diffusion bundle or a
#    trained demist model, unpacked into /opt/demist/weights:
#      docker build --build-arg DEMIST_WEIGHTS_URL=https://.../model.tar.gz \
#                   --build-arg DEMIST_WEIGHTS_SHA256=<sha256> -t demist:trained .
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS weights
ARG DEMIST_WEIGHTS_URL=""
ARG DEMIST_WEIGHTS_SHA256=""
RUN mkdir -p /opt/demist/weights \
    && if [ -n "${DEMIST_WEIGHTS_URL}" ]; then \
         python -c "import hashlib, shutil, sys, urllib.request; \
url, sha, dest = sys.argv[1:]; \
path = dest + '/' + url.split('?')[0].rsplit('/', 1)[-1]; \
urllib.request.urlretrieve(url, path); \
digest = hashlib.sha256(open(path, 'rb').read()).hexdigest(); \
sha and digest != sha and sys.exit(f'sha256 mismatch: {digest}'); \
archive = path.endswith(('.zip', '.tar', '.tar.gz', '.tgz')); \
archive and shutil.unpack_archive(path, dest); \
archive and __import__('os').remove(path)" \
           "${DEMIST_WEIGHTS_URL}" "${DEMIST_WEIGHTS_SHA256}" /opt/demist/weights; \
       fi \
    && chmod -R a+rX /opt/demist

# ---------------------------------------------------------------------------
# 4. The application: torch + the wheel and its dependencies (current
#    niworkflows on Python 3.12), TemplateFlow files pre-fetched, weights.
FROM torch AS demist
ARG WHEELS=/tmp/wheels
COPY --from=wheel /wheels ${WHEELS}
RUN pip install --no-cache-dir "${WHEELS}"/demist_bids-*.whl \
    && rm -rf "${WHEELS}"

# The brain template the preprocessing registers to and the default output space
# (--output-spaces MNI152NLin2009cAsym[:res-2]), fetched now because the container
# may run offline; the package itself checks that it finds them.
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN python -c "from templateflow import api; \
api.get('MNI152NLin2009cAsym', resolution=[1, 2], suffix='T1w', desc=None, extension='.nii.gz'); \
api.get('MNI152NLin2009cAsym', resolution=[1, 2], suffix='mask', desc='brain', extension='.nii.gz')" \
    && python -c "from demist_bids.preprocessing.templates import templateflow_files as f; assert f(), 'templates missing'" \
    && python -c "from demist_bids.preprocessing.templates import check_space_template as c; \
assert all(c('MNI152NLin2009cAsym', r) == 'TemplateFlow' for r in ('1', '2'))" \
    && chmod -R a+rX /opt/templateflow

COPY --from=weights /opt/demist /opt/demist

# Any user id, read-only root filesystem: nothing is written outside /tmp and
# the mounted output and work directories. Threads default to one per process;
# demist's --nprocs/--omp-nthreads set what each job really uses.
ENV HOME=/tmp \
    USER=demist \
    LOGNAME=demist \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    NIPYPE_CONFIG_DIR=/tmp/.nipype \
    DENO_DIR=/tmp/.cache/deno \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NIPYPE_NO_ET=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    DEMIST_WEIGHTS_DIR=/opt/demist/weights

ARG VERSION=0.1.0
ARG BUILD_DATE=""
ARG VCS_REF=""
LABEL org.opencontainers.image.title="demist" \
      org.opencontainers.image.description="DEMIST: synthesize qMT pool-size-ratio (PSR) myelin maps from T1w and FLAIR with a 3D latent diffusion model (BIDS-App)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="https://github.com/demist-bids/demist" \
      org.opencontainers.image.url="https://github.com/demist-bids/demist" \
      org.opencontainers.image.documentation="https://github.com/demist-bids/demist/blob/main/docs/containers.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="The demist developers"

WORKDIR /tmp
USER 65534:65534
ENTRYPOINT ["demist"]
CMD ["--help"]
