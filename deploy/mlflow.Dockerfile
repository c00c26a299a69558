# The tracking server: MLflow's own image plus the PostgreSQL driver and the S3 client it needs
# (the official image carries neither). MLflow's version matches constraints.txt.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 boto3==1.44.5
