# One image for every service (one artifact, different commands); see compose.yaml.
# BASE: any image with Python 3.11 and pip (the compose test builds FROM a local Debian image, tests/compose/).
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /app
# The dependencies first, from pyproject.toml alone: a change to the code rebuilds only the layers below.
COPY pyproject.toml ./
RUN python -c "import tomllib as t; print(*t.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
COPY devstack ./devstack
COPY examples ./examples
# The web console: its code, and its npm packages as ./dev-stack up installed them (console/node_modules).
COPY console ./console
# Editable, so that the demo finds examples/ beside the code (REPO_ROOT is the source tree).
RUN pip install --no-cache-dir --no-deps -e .
# Deployed apps run as this unprivileged user, never as root (the deployer switches to it).
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin promote-app
ENV PROMOTE_VAR_DIR=/var/lib/promote \
    PYTHONUNBUFFERED=1
EXPOSE 8080
CMD ["promote", "--help"]
