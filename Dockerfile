# Custom Dataflow worker container for cxr-instruct (runbook: docs/dataflow.md).
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/cxr-instruct:0.1.0 .                      # build only
#   docker build --build-arg TOKENIZER=cuda -t REGION-docker.pkg.dev/PROJECT/REPO/cxr-instruct:0.1.0-gpu .
#
# TOKENIZER: none (build stage only), cpu (torch CPU wheel) or cuda (torch CUDA wheel for the
# right-fitted L4 tokenizer step). The Beam SDK image keeps its entrypoint, /opt/apache/beam/boot,
# which the Dataflow worker harness starts. Not built in the development sandbox (no Docker engine).

ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

ARG BEAM_VERSION
ARG TOKENIZER=none
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# Pick the CUDA build that the driver Dataflow installs supports (L4: driver >= 525, CUDA >= 12.0).
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/cxr-instruct
# Only what the package is built from: never .venv, build outputs or data.
COPY pyproject.toml README.md ./
COPY pipelines ./pipelines
COPY schemas ./schemas
COPY transforms ./transforms
COPY manifests ./manifests

# torch comes first from the variant's index, so the `tokenizer` extra's torch==2.13.0 pin is already
# met (a +cpu / +cuXXX local version satisfies ==2.13.0) and pip does not swap it for another build.
RUN set -eux; \
    case "${TOKENIZER}" in \
      none) extra="" ;; \
      cpu)  pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CPU_INDEX}"; extra="[tokenizer]" ;; \
      cuda) pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_CUDA_INDEX}"; extra="[tokenizer]" ;; \
      *) echo "TOKENIZER must be none, cpu or cuda, not ${TOKENIZER}" >&2; exit 1 ;; \
    esac; \
    pip install ".${extra}"; \
    pip check; \
    python -c "import apache_beam, pipelines.beam.build; assert apache_beam.__version__ == '${BEAM_VERSION}', apache_beam.__version__"

# Tokenizer weights: workers may have no internet access, so a converted model folder
# (`cxr-instruct tokenizer convert`) is baked in at the same path the launcher passes to --model, e.g.
#   COPY vqgan/ /opt/cxr-instruct/vqgan/

WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]
