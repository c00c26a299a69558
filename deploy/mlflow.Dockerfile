# The tracking server: MLflow's own image plus the PostgreSQL driver, the S3 client and the CSRF package
# of its basic-auth app (the official image carries none of them). Versions match constraints.txt.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 boto3==1.44.5 flask-wtf==1.3.0
