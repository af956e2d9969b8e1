"""The offline demo Med-FM (see README.md here): ``build_backbone("biomedclip", MODEL_DIR)``."""
import os.path as osp

MODEL_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "model")
